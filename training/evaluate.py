"""Evaluation during training: zero-shot classification on the validation shards, and the optional zero-shot
segmentation check (skipped, with one log line, when its evaluator or dataset is missing)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from datasets.builder import DeviceImages
from training.precision import Precision
from utils.distributed import all_reduce_sum
from utils.errors import UserError
from utils.eval_mode import eval_mode


def load_classnames(cls_cfg: DictConfig) -> list[str]:
    """``evaluate.cls.classnames``: None -> the 1000 ImageNet names; a list; or a file with one name per line."""
    names = cls_cfg.get("classnames")
    if names is None:
        from datasets import imagenet_classes

        return list(imagenet_classes)
    if isinstance(names, str):
        path = Path(names)
        if not path.is_file():
            raise UserError(f"evaluate.cls.classnames: file not found: {names}")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [str(name) for name in names]


@torch.no_grad()
def evaluate_cls(cfg: DictConfig, model: nn.Module, loader: Iterable, precision: Precision, device: torch.device,
                 keep_predictions: bool = False) -> dict[str, Any]:
    """Zero-shot classification over every image of ``loader`` (all ranks together): top-1/top-5 in percent.

    The one classifier: the per-epoch evaluation, ``main_group_vit.py --eval`` and the quickstart call it. Class
    embeddings: each class name in each ``evaluate.cls.template`` prompt, encoded, averaged over prompts, then
    L2-normalised (the reference's ``build_text_embedding``); logits are the images' cosine similarities to them.
    With ``keep_predictions`` the result also holds this rank's ``classnames``, ``targets`` and each image's
    ``top5`` class indices, in loader order.
    """
    from datasets import Tokenize, build_dataset_class_tokens

    classnames = load_classnames(cfg.evaluate.cls)
    tokens = build_dataset_class_tokens(Tokenize(max_seq_len=cfg.data.text_aug.max_seq_len),
                                        cfg.evaluate.cls.template, classnames)  # [N, T, 77]
    k = min(5, len(classnames))
    counts = torch.zeros(3, dtype=torch.long, device=device)  # top-1 hits, top-k hits, images
    images = DeviceImages(False, cfg.data.img_aug, device)  # normalises uint8 images (data.uint8_images)
    targets, top5 = [], []
    with eval_mode(model) as model:
        with precision.autocast(device):
            text_emb = torch.cat([model.build_text_embedding(chunk.to(device)) for chunk in tokens.split(100)])
        for batch in loader:
            image, target = images(batch["image"].to(device, non_blocking=True)), batch["target"].to(device)
            if int(target.max()) >= len(classnames):
                raise UserError(f"validation label {int(target.max())} but only {len(classnames)} class names "
                                "(evaluate.cls.classnames)")
            with precision.autocast(device):
                logits = model.zero_shot_pred(image, text_emb)  # [B, N]
            best = logits.float().topk(k, dim=1).indices  # [B, k]
            hits = best == target[:, None]  # [B, k]
            counts += torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum(), counts.new_tensor(len(target))])
            if keep_predictions:
                targets += target.tolist()
                top5 += best.tolist()
    top1, topk, total = all_reduce_sum(counts).tolist()
    if total == 0:
        raise UserError("zero-shot classification: no validation image could be read")
    results = {"acc1": 100.0 * top1 / total, "acc5": 100.0 * topk / total, "num_images": total}
    if keep_predictions:
        results.update(classnames=classnames, targets=targets, top5=top5)
    return results


def evaluate_seg_if_available(cfg: DictConfig, model: nn.Module, logger: logging.Logger) -> float | None:
    """mIoU (x100) from the segmentation evaluator; None (with one log line) when it or its dataset is missing."""
    try:
        from segmentation.evaluation import evaluate_seg
    except ImportError as e:
        logger.info(f"zero-shot segmentation skipped: the evaluator is not available ({e})")
        return None
    try:
        return float(evaluate_seg(cfg, model, logger=logger).miou)
    except UserError as e:
        logger.info(f"zero-shot segmentation skipped: {e}")
        return None


def evaluate_epoch(cfg: DictConfig, model: nn.Module, cls_loader: Iterable | None, run_seg: bool,
                   metrics: dict[str, float], precision: Precision, device: torch.device,
                   logger: logging.Logger) -> tuple[dict[str, float], list[str], bool]:
    """The per-epoch evaluation: zero-shot classification when ``cls_loader`` exists, segmentation when ``run_seg``.

    Updates the best ``metrics`` ('max_accuracy', 'max_miou') in place. Returns this epoch's results, the metrics
    that improved and have ``save_best`` ('acc1', 'miou'), and whether segmentation should run next time (not
    after it was skipped).
    """
    results, best = {}, []
    if cls_loader is not None:
        results.update(evaluate_cls(cfg, model, cls_loader, precision, device))
        logger.info(f"Accuracy on the {results['num_images']} test images: top-1 {results['acc1']:.2f}% "
                    f"top-5 {results['acc5']:.2f}%")
        if results["acc1"] > metrics["max_accuracy"] and cfg.evaluate.cls.save_best:
            best.append("acc1")
        metrics["max_accuracy"] = max(metrics["max_accuracy"], results["acc1"])
    if run_seg:
        miou = evaluate_seg_if_available(cfg, model, logger)
        if miou is None:
            return results, best, False
        results["miou"] = miou
        logger.info(f"mIoU {miou:.2f}")
        if miou > metrics["max_miou"] and cfg.evaluate.seg.save_best:
            best.append("miou")
        metrics["max_miou"] = max(metrics["max_miou"], miou)
    return results, best, run_seg
