"""One training step: forward, backward, gradient clipping and the optimizer step, with non-finite values kept away
from the weights; ``NonFiniteGuard`` counts the skipped steps and stops a run that keeps producing them."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from training.precision import Precision
from utils.distributed import all_reduce_sum, is_dist, unwrap
from utils.errors import UserError


def _finite_everywhere(value: torch.Tensor) -> bool:
    """Whether ``value`` is finite in every process (an all-reduce under torch.distributed, so that all agree)."""
    bad = (~torch.isfinite(value.detach())).any().float().reshape(1)
    return not (all_reduce_sum(bad) if is_dist() else bad).item()


def train_step(model: nn.Module, batch: Mapping[str, torch.Tensor], optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, precision: Precision, clip_grad: float | None,
               accumulation: int = 1, step: bool = True) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Forward, backward and (when ``step``) clip + optimizer step; returns the losses and the pre-clip grad norm.

    The total loss is the sum of every output whose name contains 'loss', divided by ``accumulation`` for the
    backward. Without ``step`` the gradients accumulate (and DDP does not synchronise them) and the norm is None.

    Non-finite values never reach the model: a loss that is non-finite (in any process) gets no backward, the
    buffers its forward updated (BatchNorm statistics) are restored, and when its call should step, the step is
    skipped and the accumulated gradients are dropped; a non-finite gradient norm skips the step too. A step skipped
    so returns None as its norm. (With the fp16 grad scaler, a non-finite norm is its routine overflow: the scaler
    skips that step itself and lowers its scale, and the norm is returned as measured.)
    """
    device = next(unwrap(model).parameters()).device
    buffers = [(b, b.clone()) for b in unwrap(model).buffers()]
    sync = step or not isinstance(model, DistributedDataParallel)
    with contextlib.nullcontext() if sync else model.no_sync():
        with precision.autocast(device):
            losses = model(**batch)
        total = sum(v for k, v in losses.items() if "loss" in k)
        finite = _finite_everywhere(total)
        if finite:
            scaler.scale(total / accumulation).backward()
        else:
            with torch.no_grad():
                for buffer, before in buffers:
                    buffer.copy_(before)
    losses = {"total_loss": total.detach(), **{k: v.detach() for k, v in losses.items()}}
    if not step:
        return losses, None
    grad_norm = None
    if finite:
        scaler.unscale_(optimizer)
        max_norm = clip_grad if clip_grad else float("inf")  # inf: measure the norm without clipping
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        if scaler.is_enabled() or torch.isfinite(grad_norm):
            scaler.step(optimizer)
        else:
            grad_norm = None
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return losses, grad_norm


class NonFiniteGuard:
    """Counts the iterations whose loss or gradient norm was non-finite (their steps were skipped); ``limit`` in a
    row (0: no limit) stop the run with a UserError naming the iteration and ``last_checkpoint``."""

    def __init__(self, limit: int, last_checkpoint: str | None = None):
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise UserError(f"train.max_nonfinite_steps must be a whole number >= 0, not {limit!r}")
        self.limit = limit
        self.last_checkpoint = last_checkpoint  # the newest complete checkpoint of the run, for the stop message
        self.in_a_row = 0
        self.in_epoch = 0

    def start_epoch(self) -> None:
        self.in_epoch = 0

    def update(self, finite: bool, iteration: int, where: str) -> None:
        """Record one iteration (``where``: e.g. 'epoch 1, step 3/10')."""
        if finite:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        self.in_epoch += 1
        if self.limit and self.in_a_row >= self.limit:
            last = f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint else \
                "no checkpoint was saved yet"
            raise UserError(f"training stopped at iteration {iteration} ({where}): {self.in_a_row} non-finite losses "
                            f"or gradient norms in a row (train.max_nonfinite_steps={self.limit}); {last}")
