"""Checkpoint files of a training run: the training state in the reference's layout, the epoch checkpoints
(``ckpt_epoch_N.pth``, ``checkpoint.pth``, best copies, pruning), the step checkpoints (``checkpoint.pth`` within an
epoch, ``checkpoint.save_steps``) and resuming from any of them.

A step checkpoint has the epoch checkpoint's keys, with 'epoch' the epoch in progress, plus 'epoch_iterations' (the
iterations of that epoch already trained) and 'rng' (every process's RNG states at that point, by rank).

The loop calls ``save_after_step`` and ``save_after_epoch``; each save becomes the run's last complete checkpoint
(``note_saved``), which the non-finite guard's stop message and the stop line (Ctrl-C) name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch import nn

from training.rng import rng_state
from training.state import RunState
from utils.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from utils.distributed import get_rank, get_world_size, unwrap
from utils.errors import UserError

_EPOCH_FILE = re.compile(r"^ckpt_epoch_(\d+)\.pth$")


def save_run_config(cfg: DictConfig) -> None:
    """``<output>/config.yml``: the resolved run config (rank 0). Training writes it after its first step, so that a
    run stopped by bad input or data before training leaves an earlier run's file as it was."""
    if get_rank() == 0:
        container = OmegaConf.to_container(cfg, resolve=True)
        container.pop("_base_", None)  # the saved file stands alone
        OmegaConf.save(OmegaConf.create(container), Path(cfg.output) / "config.yml")


def batch_of(cfg: DictConfig, world_size: int) -> dict[str, int]:
    """What one optimizer step trains on: samples per process, processes, micro-batches per step. The schedule
    (iterations per epoch, learning rates scaled to the batch) and a step checkpoint's place in its epoch depend on
    it, so a checkpoint records it (``'batch'``) and is resumed only with the same."""
    return {"per_process": cfg.data.batch_size, "processes": world_size,
            "accumulation": max(1, cfg.train.accumulation_steps)}


def _describe(batch: Mapping[str, int]) -> str:
    return (f"{batch['per_process']} samples per process x {batch['processes']} process(es) x "
            f"{batch['accumulation']} accumulation step(s)")


def check_same_batch(path: str, ckpt: Mapping[str, Any], batch: Mapping[str, int]) -> None:
    """Refuse to resume ``ckpt`` (with training state) under another global batch or accumulation: its restored
    schedule would run out of step with this run's iterations, and a step checkpoint would skip the wrong samples.
    The processes may differ when the global batch stays (e.g. 2 x 16 or 1 x 32). Checkpoints without a record
    (the reference's, older ones) are not checked."""
    saved = ckpt.get("batch")
    if not isinstance(saved, Mapping):
        return
    ours = (batch["per_process"] * batch["processes"], batch["accumulation"])
    if (saved["per_process"] * saved["processes"], saved["accumulation"]) != ours:
        where = f"mid-epoch (epoch {ckpt['epoch']}, iteration {ckpt['epoch_iterations']})" \
            if "epoch_iterations" in ckpt else f"after epoch {ckpt['epoch']}"
        raise UserError(f"{path} was saved {where} with {_describe(saved)}; this run has {_describe(batch)}: its "
                        "learning-rate schedule and place in the data would not fit. Resume it with the same global "
                        "batch (--batch-size, processes, train.accumulation_steps), or train anew in another --output")


def check_not_another_run(cfg: DictConfig) -> None:
    """Without auto-resume, a run that does not resume from a checkpoint of its output folder would overwrite the
    checkpoints there (another run's, from epoch 0 on): refused in one line."""
    folder = Path(cfg.output)
    found = sorted(folder.glob("*.pth"))
    resume = cfg.checkpoint.resume
    ours = bool(resume) and Path(resume).exists() and Path(resume).resolve().parent == folder.resolve()
    if found and not cfg.checkpoint.auto_resume and not ours:
        raise UserError(f"{folder} holds the checkpoints of another run (e.g. {found[0].name}), which this one would "
                        "overwrite: choose another --output, continue that run (checkpoint.auto_resume, or --resume "
                        "one of its checkpoints), or move them away")


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler,
                   epoch: int, metrics: Mapping[str, float], cfg: DictConfig) -> dict[str, Any]:
    """The reference's checkpoint layout (plus the grad scaler and ``'batch'``, :func:`batch_of`), with the config
    as plain data."""
    state = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "metrics": dict(metrics),
        "epoch": epoch,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "batch": batch_of(cfg, get_world_size()),
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


def save_step_checkpoint(output: str, state: Mapping[str, Any], iterations_done: int) -> Path:
    """Write ``checkpoint.pth`` within epoch ``state['epoch']`` after its first ``iterations_done`` iterations, with
    the RNG states of all processes (every process calls this; rank 0 writes). Returns the path."""
    states = [rng_state()]
    if get_world_size() > 1:
        states = [None] * get_world_size()
        dist.all_gather_object(states, rng_state())
    path = Path(output) / "checkpoint.pth"
    if get_rank() == 0:
        save_checkpoint({**state, "epoch_iterations": iterations_done, "rng": states}, path)
    return path


def note_saved(state: RunState, checkpoint: str | Path) -> None:
    """``checkpoint`` is the run's last complete checkpoint."""
    state.guard.last_checkpoint = str(checkpoint)
    state.progress.checkpoint_saved(checkpoint, state.cfg.checkpoint.auto_resume)


def save_after_step(state: RunState, epoch: int, idx: int, num_steps: int) -> None:
    """After the optimizer step that ends at iteration ``idx`` of ``epoch``: ``config.yml`` after the run's first
    step; ``checkpoint.pth`` after every ``checkpoint.save_steps``-th step of the run, but an epoch's last (the epoch
    has its own checkpoints)."""
    cfg, accumulation = state.cfg, max(1, state.cfg.train.accumulation_steps)
    if not state.config_saved:  # a run stopped by bad input or data before this leaves config.yml alone
        save_run_config(cfg)
        state.config_saved = True
    steps_done = (epoch * num_steps + idx + 1) // accumulation
    if not cfg.checkpoint.save_steps or steps_done % cfg.checkpoint.save_steps or idx + accumulation >= num_steps:
        return
    ckpt = training_state(state.model, state.optimizer, state.scheduler, state.scaler, epoch, state.history.best, cfg)
    saved = save_step_checkpoint(cfg.output, ckpt, idx + 1)
    state.logger.info(f"saved {saved} (epoch {epoch}, after iteration {idx + 1}/{num_steps})")
    note_saved(state, saved)


def save_after_epoch(state: RunState, epoch: int, best: Iterable[str]) -> None:
    """``ckpt_epoch_<epoch>.pth`` and ``checkpoint.pth``, with best copies for the metrics in ``best`` (rank 0)."""
    cfg, saved = state.cfg, Path(state.cfg.output) / f"ckpt_epoch_{epoch}.pth"
    state.progress.now_doing(f"saving the checkpoint of epoch {epoch}")
    if get_rank() == 0:
        ckpt = training_state(state.model, state.optimizer, state.scheduler, state.scaler, epoch, state.history.best,
                              cfg)
        save_epoch_checkpoint(cfg.output, ckpt, cfg.checkpoint.max_kept, best)
        state.logger.info(f"saved {saved}" + "".join(f" (best {m})" for m in best))
    note_saved(state, saved)


@dataclass
class ResumePoint:
    """Where a resumed run starts: the epoch, the iterations of it already trained (a step checkpoint's), the RNG
    states to continue from after them (this process's; None at an epoch start), the best metrics so far."""

    epoch: int = 0
    iteration: int = 0
    rng: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=lambda: {"max_accuracy": 0.0, "max_miou": 0.0})


def resume_training(path: str, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    scaler: torch.amp.GradScaler, logger: logging.Logger, batch: Mapping[str, int]) -> ResumePoint:
    """Load a checkpoint into the run; returns where training continues.

    The model is always loaded (strictly). Optimizer, scheduler, grad scaler and epoch are restored when the
    file has them (our training checkpoints, and the reference's), if it was trained with the same global
    ``batch`` (:func:`check_same_batch`); a weights-only file (e.g. a released model) starts at epoch 0. An epoch
    checkpoint continues at the next epoch, a step checkpoint within its epoch.
    """
    ckpt = load_checkpoint(path)
    load_model_state(unwrap(model), ckpt["model"])
    metrics = {"max_accuracy": 0.0, "max_miou": 0.0, **{k: float(v) for k, v in ckpt.get("metrics", {}).items()}}
    if not all(key in ckpt for key in ("optimizer", "lr_scheduler", "epoch")):
        logger.info(f"loaded the model weights of {path} (no training state in it): training starts at epoch 0")
        return ResumePoint(metrics=metrics)
    check_same_batch(path, ckpt, batch)
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["lr_scheduler"])
    if scaler.is_enabled() and "scaler" in ckpt:
        scaler.load_state_dict(ckpt["scaler"])
    best = f"max accuracy {metrics['max_accuracy']:.2f}, max mIoU {metrics['max_miou']:.2f}"
    if "epoch_iterations" not in ckpt:
        logger.info(f"resumed from {path} (epoch {ckpt['epoch']}; {best})")
        return ResumePoint(epoch=int(ckpt["epoch"]) + 1, metrics=metrics)
    rng = ckpt["rng"][get_rank()] if len(ckpt["rng"]) == get_world_size() else None
    if rng is None:
        logger.warning(f"{path} holds the RNG states of {len(ckpt['rng'])} processes, not {get_world_size()}: the "
                       "run continues at the same sample but with other random augmentations")
    logger.info(f"resumed from {path} (epoch {ckpt['epoch']}, after iteration {ckpt['epoch_iterations']}; {best})")
    return ResumePoint(epoch=int(ckpt["epoch"]), iteration=int(ckpt["epoch_iterations"]), rng=rng, metrics=metrics)
