"""One training step: forward, backward, gradient clipping and the optimizer step, with non-finite values kept away
from the weights; ``NonFiniteGuard`` counts the skipped steps and stops a run that keeps producing them."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from training.precision import Precision
from utils.distributed import all_reduce_sum, is_dist, unwrap
from utils.errors import UserError


def finite_everywhere(value: torch.Tensor) -> torch.Tensor:
    """Whether ``value`` is finite in every process, as a 0-dim bool tensor on its device (an all-reduce under
    torch.distributed, so that all agree; nothing is read back to the host)."""
    bad = (~torch.isfinite(value.detach())).any().float().reshape(1)
    if is_dist():
        all_reduce_sum(bad)
    return bad[0] == 0


def train_step(model: nn.Module, batch: Mapping[str, Any], optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, precision: Precision, clip_grad: float | None,
               accumulation: int = 1, step: bool = True,
               ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor]:
    """Forward, backward and (when ``step``) clip + optimizer step; returns the losses, the pre-clip grad norm
    (None without ``step``) and whether the iteration was finite (a 0-dim bool tensor), all on the device.

    The total loss is the sum of every output whose name contains 'loss', divided by ``accumulation`` for the
    backward. Without ``step`` the gradients accumulate (and DDP does not synchronise them).

    Non-finite values never reach the model, and the host never waits for the device to find out (the decisions are
    device tensors): a loss that is non-finite (in any process) leaves the buffers its forward updated (BatchNorm
    statistics) as they were and adds no gradient; when its call should step, its gradients are made NaN so that
    the step is skipped; a non-finite gradient norm skips the step too. A skipped step leaves the weights, the AdamW
    moments and step counts alone (fused AdamW's ``found_inf``; another optimizer is stepped when the host has read
    the norm). Such an iteration returns finite = False (its norm is non-finite). With the fp16 grad scaler, a
    non-finite norm is its routine overflow: the scaler skips that step itself and lowers its scale, and the
    iteration counts as finite unless its loss was not (which lowers the scale too).
    """
    device = next(unwrap(model).parameters()).device
    buffers = [(b, b.clone()) for b in unwrap(model).buffers()]
    accumulated = [(p, p.grad.clone()) for p in model.parameters() if p.grad is not None] if accumulation > 1 else []
    sync = step or not isinstance(model, DistributedDataParallel)
    with contextlib.nullcontext() if sync else model.no_sync():
        with precision.autocast(device):
            losses = model(**batch)
        total = sum(v for k, v in losses.items() if "loss" in k)
        finite = finite_everywhere(total)
        scaler.scale(total / accumulation).backward()
    with torch.no_grad():
        for buffer, before in buffers:
            buffer.copy_(torch.where(finite, buffer, before))
        if accumulation > 1:  # a bad micro-batch adds nothing to what the good ones accumulated
            before = dict(accumulated)
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.copy_(torch.where(finite, p.grad, before[p] if p in before else 0.0))
    losses = {"total_loss": total.detach(), **{k: v.detach() for k, v in losses.items()}}
    if not step:
        return losses, None, finite
    with torch.no_grad():
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if grads:  # a non-finite loss skips the step: through the norm, and the scaler's own overflow check
            grads[0].masked_fill_(~finite, float("nan"))
    scaler.unscale_(optimizer)
    max_norm = clip_grad if clip_grad else float("inf")  # inf: measure the norm without clipping
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if scaler.is_enabled():
        scaler.step(optimizer)
        scaler.update()
        finite_step = finite
    else:
        finite_step = torch.isfinite(grad_norm)
        skip_unless(optimizer, finite_step)
    optimizer.zero_grad(set_to_none=True)
    return losses, grad_norm, finite_step


def compile_forward(model: nn.Module, length_multiple: int, backend: str = "inductor") -> None:
    """``train.compile``: the model's forward (``forward_train`` in training) compiled in place with
    ``fullgraph=True`` (the text lengths come from the host, so nothing breaks the graph) and ``dynamic=False``: one
    graph per (caption, prompt) length bucket of ``length_multiple``, and dynamo may keep them all."""
    import torch._dynamo

    buckets = (-(-77 // length_multiple) + 1) ** 2
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, buckets)
    model.compile(fullgraph=True, dynamic=False, backend=backend)


def skip_unless(optimizer: torch.optim.Optimizer, take: torch.Tensor) -> None:
    """``optimizer.step()`` when the 0-dim bool ``take`` is true: decided on the device for an optimizer that takes
    a ``found_inf`` flag (fused AdamW: weights, moments and step counts unchanged otherwise), else on the host."""
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.found_inf = (~take).float()
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif take:
        optimizer.step()


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
