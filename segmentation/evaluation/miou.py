"""Zero-shot segmentation evaluation: mIoU over a dataset (single process or one share per rank).

``evaluate_seg(cfg, model)`` is what the trainer (``.miou``) and ``main_seg.py`` call; it returns the per-class
table, can write visualisations (``main_seg.py``) and can score several background thresholds from one forward per
image. The metric is mmseg's ``IoUMetric`` (background included, ignore index 255, NaN-mean over classes), with the
per-class values kept. ``evaluate.seg.protocol`` and ``evaluate.seg.short_side`` choose the test resolution,
windows and prompts (``protocols.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from mmengine.config import Config
from mmseg.evaluation import IoUMetric
from omegaconf import DictConfig
from prettytable import PrettyTable
from tqdm import tqdm

from utils.distributed import get_rank
from utils.errors import UserError
from utils.eval_mode import eval_mode
from utils.logger import get_logger

from ..vis import visualize_sample
from .builder import build_seg_dataloader, build_seg_dataset, build_segmentor, load_seg_config
from .protocols import apply_protocol


@dataclass
class SegResults:
    """Metrics in percent, rounded to 2 decimals as mmseg reports them; per-class NaN = class in neither the
    ground truth nor the predictions (left out of the means). ``bg_thresh``: the background threshold of these
    numbers (None: the dataset has no background class); ``sweep``: with several thresholds, the results at each
    (the first is these)."""

    classes: list[str]
    iou: list[float]
    acc: list[float]
    miou: float
    macc: float
    aacc: float
    num_images: int
    bg_thresh: float | None = None
    protocol: str = "groupvit"
    sweep: list[SegResults] = field(default_factory=list)

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

        out = {"mIoU": num(self.miou), "mAcc": num(self.macc), "aAcc": num(self.aacc),
               "num_images": self.num_images, "protocol": self.protocol, "bg_thresh": self.bg_thresh,
               "IoU": {c: num(v) for c, v in zip(self.classes, self.iou, strict=True)},
               "Acc": {c: num(v) for c, v in zip(self.classes, self.acc, strict=True)}}
        if self.sweep:
            out["bg_thresh_sweep"] = [{k: v for k, v in replace(r, sweep=[]).to_json().items()
                                       if k not in ("num_images", "protocol")} for r in self.sweep]
        return out


def label_areas(pred: torch.Tensor, label: torch.Tensor, num_classes: int,
                ignore_index: int = 255) -> tuple[torch.Tensor, ...]:
    """Per-class (intersection, union, predicted, labelled) pixel counts [C] each of label maps of any shape
    (mmseg's ``IoUMetric.intersect_and_union``); sum them over images and give them to :func:`iou_metrics`."""
    return IoUMetric.intersect_and_union(pred, label, num_classes, ignore_index)


def iou_metrics(areas: Sequence[tuple[torch.Tensor, ...]], decimals: int | None = 2) -> dict:
    """Per-class IoU and Acc, and mIoU / mAcc (NaN-means over classes) and aAcc, in percent rounded to ``decimals``
    (None: not rounded), from the :func:`label_areas` of every image: the numbers of ``PerClassIoUMetric`` and
    ``main_seg.py``."""
    intersect, union, pred_area, label_area = (sum(parts).cpu() for parts in zip(*areas, strict=True))
    per_class = {k: np.asarray(v, dtype=np.float64) for k, v in IoUMetric.total_area_to_metrics(
        intersect, union, pred_area, label_area, ["mIoU"]).items()}

    def pct(values: np.ndarray) -> np.ndarray:
        return values * 100 if decimals is None else np.round(values * 100, decimals)

    with np.errstate(invalid="ignore"):
        return {"IoU": pct(per_class["IoU"]).tolist(), "Acc": pct(per_class["Acc"]).tolist(),
                "mIoU": float(pct(np.nanmean(per_class["IoU"]))), "mAcc": float(pct(np.nanmean(per_class["Acc"]))),
                "aAcc": float(pct(per_class["aAcc"]))}


class PerClassIoUMetric(IoUMetric):
    """``IoUMetric`` whose result also holds the per-class IoU and accuracy (and which prints nothing)."""

    default_prefix = "seg"

    def compute_metrics(self, results: list) -> dict:
        return iou_metrics(results)


def _sample_name(sample) -> str:
    return Path(sample.metainfo["img_path"]).stem


def load_eval_seg_config(seg: DictConfig) -> tuple[Config, str]:
    """The dataset config of ``cfg.evaluate.seg`` (``cfg``, ``bg_thresh``, ``opts``) under its ``protocol`` and
    ``short_side``, and the prompt template set to use. ``bg_thresh`` is its own key so that a run's chosen
    threshold survives an ``opts`` that only points at another data root."""
    bg_thresh = seg.get("bg_thresh")
    seg_cfg = load_seg_config(seg.cfg, [*([] if bg_thresh is None else [f"test_cfg.bg_thresh={bg_thresh}"]), *seg.opts])
    return apply_protocol(seg_cfg, seg.get("protocol", "groupvit"), seg.get("short_side"), seg.template)


def _threshold_sample(sample, k: int) -> dict:
    """What ``IoUMetric.process`` reads of ``sample``, with the label map of background threshold ``k``."""
    return {"pred_sem_seg": {"data": sample.pred_sem_seg_per_thresh.data[k:k + 1]},
            "gt_sem_seg": {"data": sample.gt_sem_seg.data}}


@torch.no_grad()
def evaluate_seg(cfg: DictConfig, model: torch.nn.Module, logger: logging.Logger | None = None,
                 vis_modes: Sequence[str] = (), vis_dir: str | Path | None = None,
                 bg_threshs: Sequence[float] | None = None) -> SegResults:
    """Evaluate ``model`` on the dataset of ``cfg.evaluate.seg`` (``cfg``, ``opts``, ``template``, ``protocol``,
    ``short_side``).

    ``bg_threshs``: background thresholds to score instead of the config's, all from one forward per image (the
    threshold only changes the final labelling); the result holds the first and ``sweep`` all of them. A UserError
    for a dataset without background. Under torch.distributed every rank runs its share and gets the gathered
    result. With ``vis_modes``, each rank writes ``<vis_dir>/<mode>/<image name>.png`` for its images (the first
    threshold's labels). The model is put in eval mode and restored afterwards; a DistributedDataParallel wrapper
    is looked through.
    """
    logger = logger or get_logger()
    seg_cfg, template = load_eval_seg_config(cfg.evaluate.seg)
    protocol = cfg.evaluate.seg.get("protocol", "groupvit")
    dataset = build_seg_dataset(seg_cfg)
    if bg_threshs and dataset.metainfo["classes"][0] != "background":
        raise UserError(f"--bg-thresh: {cfg.evaluate.seg.cfg} has no background class, so no background "
                        "threshold applies")
    loader = build_seg_dataloader(dataset, seg_cfg)
    with eval_mode(model) as model:
        seg_model = build_segmentor(model, dataset, seg_cfg, template=template, bg_threshs=bg_threshs)
        seg_model.keep_seg_logits = False  # the metric reads the labels; no dense [C, H, W] map per image
        thresholds = seg_model.bg_threshs or (None,)
        # 'gpu' collection = all_gather_object over the process group (also fine with gloo on CPU)
        metrics = [PerClassIoUMetric(iou_metrics=["mIoU"], collect_device="gpu") for _ in thresholds]
        for metric in metrics:
            metric.dataset_meta = dataset.metainfo
        logger.info("zero-shot segmentation on %d images of %s (protocol %s, %s mode, short side %s, bg_thresh %s)",
                    len(dataset), seg_cfg.data_root, protocol, seg_cfg.test_cfg.mode, _short_side(seg_cfg),
                    " ".join(map(str, thresholds)))
        for data in tqdm(loader, desc="segmentation", disable=get_rank() != 0, dynamic_ncols=True):
            data = seg_model.data_preprocessor(data, False)
            samples = seg_model.predict(data["inputs"], data["data_samples"])
            metrics[0].process(data, [sample.to_dict() for sample in samples])
            for k, metric in enumerate(metrics[1:], start=1):
                metric.process(data, [_threshold_sample(sample, k) for sample in samples])
            if vis_modes:
                for inputs, sample in zip(data["inputs"], samples, strict=True):
                    visualize_sample(seg_model, inputs[None], sample, vis_modes, vis_dir, _sample_name(sample))
        # drop the "seg/" prefix
        values = [{k.split("/", 1)[1]: v for k, v in metric.evaluate(len(dataset)).items()} for metric in metrics]
    sweep = [SegResults(classes=list(dataset.metainfo["classes"]), iou=m["IoU"], acc=m["Acc"], miou=m["mIoU"],
                        macc=m["mAcc"], aacc=m["aAcc"], num_images=len(dataset), bg_thresh=thresh, protocol=protocol)
             for m, thresh in zip(values, thresholds, strict=True)]
    results = sweep[0]
    results.sweep = sweep if len(sweep) > 1 else []
    logger.info("per-class results:\n%s", results.table())
    for r in sweep:
        at = "" if r.bg_thresh is None else f"  (bg_thresh {r.bg_thresh})"
        logger.info("mIoU %.2f  mAcc %.2f  aAcc %.2f%s", r.miou, r.macc, r.aacc, at)
    return results


def _short_side(seg_cfg: Config) -> int | str:
    scales = [step["scale"] for step in seg_cfg.test_dataloader.dataset.pipeline if step["type"] == "Resize"]
    return min(scales[0]) if scales else "as stored"
