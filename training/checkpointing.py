"""Checkpoint files of a training run: the training state in the reference's layout, the epoch checkpoints
(``ckpt_epoch_N.pth``, ``checkpoint.pth``, best copies, pruning) and resuming from one."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from utils.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from utils.distributed import unwrap

_EPOCH_FILE = re.compile(r"^ckpt_epoch_(\d+)\.pth$")


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler,
                   epoch: int, metrics: Mapping[str, float], cfg: DictConfig) -> dict[str, Any]:
    """The reference's checkpoint layout (plus the grad scaler), with the config as plain data."""
    state = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "metrics": dict(metrics),
        "epoch": epoch,
        "config": OmegaConf.to_container(cfg, resolve=True),
        **metrics,
    }
    if scaler.is_enabled():
        state["scaler"] = scaler.state_dict()
    return state


def save_epoch_checkpoint(output: str, state: Mapping[str, Any], max_kept: int, best: Iterable[str] = ()) -> None:
    """Write ``ckpt_epoch_N.pth`` and ``checkpoint.pth``; for each metric in ``best`` (e.g. 'acc1') also
    ``ckpt_epoch_N_best_<metric>.pth``, replacing the previous best copy. ``max_kept`` > 0 keeps only that many
    ``ckpt_epoch_N.pth`` files (best copies and checkpoint.pth are never pruned)."""
    folder, epoch = Path(output), state["epoch"]
    save_checkpoint(state, folder / f"ckpt_epoch_{epoch}.pth")
    save_checkpoint(state, folder / "checkpoint.pth")
    for metric in best:
        path = folder / f"ckpt_epoch_{epoch}_best_{metric}.pth"
        save_checkpoint(state, path)
        for old in folder.glob(f"ckpt_epoch_*_best_{metric}.pth"):
            if old != path:
                old.unlink()
    if max_kept > 0:
        epochs = sorted((int(m[1]), p) for p in folder.iterdir() if (m := _EPOCH_FILE.match(p.name)))
        for _, path in epochs[:-max_kept]:
            path.unlink()


def resume_training(path: str, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    scaler: torch.amp.GradScaler, logger: logging.Logger) -> tuple[int, dict[str, float]]:
    """Load a checkpoint into the run; returns (first epoch to train, best metrics so far).

    The model is always loaded (strictly). Optimizer, scheduler, grad scaler and epoch are restored when the
    file has them (our training checkpoints); a weights-only file (e.g. a released model) starts at epoch 0.
    """
    ckpt = load_checkpoint(path)
    load_model_state(unwrap(model), ckpt["model"])
    metrics = {"max_accuracy": 0.0, "max_miou": 0.0, **{k: float(v) for k, v in ckpt.get("metrics", {}).items()}}
    if not all(key in ckpt for key in ("optimizer", "lr_scheduler", "epoch")):
        logger.info(f"loaded the model weights of {path} (no training state in it): training starts at epoch 0")
        return 0, metrics
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["lr_scheduler"])
    if scaler.is_enabled() and "scaler" in ckpt:
        scaler.load_state_dict(ckpt["scaler"])
    logger.info(f"resumed from {path} (epoch {ckpt['epoch']}; max accuracy {metrics['max_accuracy']:.2f}, "
                f"max mIoU {metrics['max_miou']:.2f})")
    return int(ckpt["epoch"]) + 1, metrics
