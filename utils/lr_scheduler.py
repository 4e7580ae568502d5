"""The reference's learning-rate schedule: timm's cosine schedule with linear warmup, stepped per iteration.

lr(t) = warmup_lr + t * (base_lr - warmup_lr) / warmup_t                      for t < warmup_t
lr(t) = min_lr + 0.5 * (base_lr - min_lr) * (1 + cos(pi * t / t_initial))      for warmup_t <= t < t_initial
lr(t) = min_lr                                                                  after t_initial
with t_initial = epochs * iters_per_epoch and warmup_t = int(warmup_epochs * iters_per_epoch) (t counts from 0,
warmup included). The training loop calls ``step_update(epoch * iters_per_epoch + idx)`` after each optimizer
step, so iteration k > 0 runs with lr(k - 1), and iteration 0 with lr(0) = warmup_lr.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from timm.scheduler import CosineLRScheduler


def build_scheduler(train_cfg: DictConfig, optimizer: torch.optim.Optimizer, iters_per_epoch: int) -> CosineLRScheduler:
    """The per-iteration cosine schedule (learning rates in ``train_cfg`` are already scaled)."""
    return CosineLRScheduler(
        optimizer,
        t_initial=train_cfg.epochs * iters_per_epoch,
        lr_min=train_cfg.min_lr,
        warmup_lr_init=train_cfg.warmup_lr,
        warmup_t=int(train_cfg.warmup_epochs * iters_per_epoch),
        cycle_limit=1,
        t_in_epochs=False,
    )

