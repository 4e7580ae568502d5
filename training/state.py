"""What a training run carries from step to step (``RunState``) and what it gives back (``History``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig
from torch import nn

from training.precision import Precision
from training.reporting import Reporter
from training.step import NonFiniteGuard, Step
from utils.interrupt import Progress

if TYPE_CHECKING:
    from datasets.builder import EpochLoader


@dataclass
class History:
    """A run's record: ``steps`` has one entry per iteration with a finite loss (epoch, iteration, lr, the losses,
    grad_norm when the iteration stepped); ``epochs`` one per trained epoch (epoch, the epoch's mean losses and
    its evaluation results); ``best`` the best metrics so far (max_accuracy, max_miou)."""

    steps: list[dict[str, float]] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=lambda: {"max_accuracy": 0.0, "max_miou": 0.0})


@dataclass
class RunState:
    """Everything the epochs of one run share: the config, the model (DDP-wrapped with several processes), its step,
    optimizer, schedule and grad scaler, the data, the guard, the stop line's progress, the reporter (rank 0) and
    the history so far."""

    cfg: DictConfig
    model: nn.Module
    step: Step  # plain, accumulated or graphed (training.loop.build_step)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    precision: Precision
    device: torch.device
    logger: logging.Logger
    guard: NonFiniteGuard
    progress: Progress  # utils.interrupt.progress: what the run is doing, and how to resume it
    train_loader: EpochLoader
    val_loader: Iterable | None
    run_seg: bool  # zero-shot segmentation after the epochs that evaluate (off once it was skipped)
    reporter: Reporter | None = None
    start_epoch: int = 0
    resume_iteration: int = 0  # iterations of ``start_epoch`` a step checkpoint had already trained
    resume_rng: dict[str, Any] | None = None  # this process's RNG states after them
    config_saved: bool = False  # config.yml is written after the run's first step
    history: History = field(default_factory=History)
