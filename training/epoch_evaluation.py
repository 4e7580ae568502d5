"""What a run evaluates at the end of an epoch: zero-shot classification on the validation shards, and the optional
zero-shot segmentation (mIoU; skipped, with one log line, when its evaluator or dataset is missing)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from omegaconf import DictConfig
from torch import nn

from training.precision import Precision
from training.zero_shot_cls import evaluate_cls
from utils.errors import UserError


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
