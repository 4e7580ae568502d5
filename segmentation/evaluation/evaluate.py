"""Zero-shot segmentation evaluation: mIoU over a dataset (single process or one share per rank).

``validate_seg(cfg, model)`` is what the trainer calls each epoch; ``evaluate_seg`` also returns the per-class
table and can write visualisations (``main_seg.py``). The metric is mmseg's ``IoUMetric`` (background included,
ignore index 255, NaN-mean over classes), with the per-class values kept.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from mmseg.evaluation import IoUMetric
from omegaconf import DictConfig
from prettytable import PrettyTable
from tqdm import tqdm

from datasets import Tokenize
from utils.distributed import get_rank
from utils.logger import get_logger

from ..vis import visualize_sample
from .builder import build_seg_dataloader, build_seg_dataset, build_seg_inference, load_seg_config


@dataclass
class SegResults:
    """Metrics in percent, rounded to 2 decimals as mmseg reports them; per-class NaN = class in neither the
    ground truth nor the predictions (left out of the means)."""

    classes: list[str]
    iou: list[float]
    acc: list[float]
    miou: float
    macc: float
    aacc: float
    num_images: int

    def table(self) -> str:
        table = PrettyTable()
        table.add_column("Class", self.classes)
        table.add_column("IoU", self.iou)
        table.add_column("Acc", self.acc)
        return table.get_string()

    def to_json(self) -> dict:
        """A JSON-ready dict (NaN becomes null)."""
        def num(x: float) -> float | None:
            return None if np.isnan(x) else x

        return {"mIoU": num(self.miou), "mAcc": num(self.macc), "aAcc": num(self.aacc),
                "num_images": self.num_images,
                "IoU": {c: num(v) for c, v in zip(self.classes, self.iou, strict=True)},
                "Acc": {c: num(v) for c, v in zip(self.classes, self.acc, strict=True)}}


class PerClassIoUMetric(IoUMetric):
    """``IoUMetric`` whose result also holds the per-class IoU and accuracy (and which prints nothing)."""

    default_prefix = "seg"

    def compute_metrics(self, results: list) -> dict:
        intersect, union, pred_area, label_area = (sum(parts) for parts in zip(*results, strict=True))
        per_class = {k: np.asarray(v, dtype=np.float64) for k, v in self.total_area_to_metrics(
            intersect, union, pred_area, label_area, self.metrics).items()}

        def pct(values: np.ndarray) -> list[float]:
            return np.round(values * 100, 2).tolist()

        with np.errstate(invalid="ignore"):
            return {"IoU": pct(per_class["IoU"]), "Acc": pct(per_class["Acc"]),
                    "mIoU": float(np.round(np.nanmean(per_class["IoU"]) * 100, 2)),
                    "mAcc": float(np.round(np.nanmean(per_class["Acc"]) * 100, 2)),
                    "aAcc": float(np.round(per_class["aAcc"] * 100, 2))}


def _sample_name(sample) -> str:
    return Path(sample.metainfo["img_path"]).stem


@torch.no_grad()
def evaluate_seg(cfg: DictConfig, model: torch.nn.Module, logger: logging.Logger | None = None,
                 vis_modes: Sequence[str] = (), vis_dir: str | Path | None = None) -> SegResults:
    """Evaluate ``model`` on the dataset of ``cfg.evaluate.seg`` (``cfg``, ``opts``, ``template``).

    Under torch.distributed every rank runs its share and gets the gathered result. With ``vis_modes``, each
    rank writes ``<vis_dir>/<mode>/<image name>.png`` for its images. The model is put in eval mode and
    restored afterwards; a DistributedDataParallel wrapper is looked through.
    """
    logger = logger or get_logger()
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    seg_cfg = load_seg_config(cfg.evaluate.seg.cfg, cfg.evaluate.seg.opts)
    dataset = build_seg_dataset(seg_cfg)
    loader = build_seg_dataloader(dataset, seg_cfg)
    was_training = model.training
    try:
        model.eval()
        seg_model = build_seg_inference(model, dataset, Tokenize(), seg_cfg, cfg.evaluate.seg.template)
        # 'gpu' collection = all_gather_object over the process group (also fine with gloo on CPU)
        metric = PerClassIoUMetric(iou_metrics=["mIoU"], collect_device="gpu")
        metric.dataset_meta = dataset.metainfo
        logger.info("zero-shot segmentation on %d images of %s (%s mode)", len(dataset), seg_cfg.data_root,
                    seg_cfg.test_cfg.mode)
        for data in tqdm(loader, desc="segmentation", disable=get_rank() != 0, dynamic_ncols=True):
            data = seg_model.data_preprocessor(data, False)
            samples = seg_model.predict(data["inputs"], data["data_samples"])
            metric.process(data, [sample.to_dict() for sample in samples])
            if vis_modes:
                for inputs, sample in zip(data["inputs"], samples, strict=True):
                    visualize_sample(seg_model, inputs[None], sample, vis_modes, vis_dir, _sample_name(sample))
        metrics = {k.split("/", 1)[1]: v for k, v in metric.evaluate(len(dataset)).items()}  # drop the "seg/" prefix
    finally:
        model.train(was_training)
    results = SegResults(classes=list(dataset.metainfo["classes"]), iou=metrics["IoU"], acc=metrics["Acc"],
                         miou=metrics["mIoU"], macc=metrics["mAcc"], aacc=metrics["aAcc"], num_images=len(dataset))
    logger.info("per-class results:\n%s", results.table())
    logger.info("mIoU %.2f  mAcc %.2f  aAcc %.2f", results.miou, results.macc, results.aacc)
    return results


def validate_seg(cfg: DictConfig, model: torch.nn.Module, logger: logging.Logger | None = None) -> float:
    """mIoU (x100) of ``model`` on ``cfg.evaluate.seg``'s dataset; UserError if the dataset folder is missing."""
    return evaluate_seg(cfg, model, logger).miou
