"""What each training step measured: its losses, gradient norm and finite flag stay on the device until the next
log line reads them all at once (the host's one wait for the device), then go to the meters, the history, the
warnings and the non-finite guard, step by step in order."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from timm.utils import AverageMeter

from training.state import RunState


class PendingStep(NamedTuple):
    """A step whose values are still on the device."""

    idx: int  # its last iteration in the epoch
    lr: float  # the learning rate it ran with
    size: int  # its samples, all micro-batches together
    names: list[str]  # its values' names: 'total_loss', then the forward's outputs
    values: torch.Tensor  # [2 + L] on the device: finite flag, pre-clip gradient norm, the L losses


class StepReadings:
    """An epoch's steps as the host sees them: ``add`` keeps a step's device values, ``read`` fetches the pending
    ones and records them; ``meters`` (per loss, weighted by samples) and ``grad_norm`` hold the finite steps."""

    def __init__(self, state: RunState, epoch: int, num_steps: int):
        self.state, self.epoch, self.num_steps = state, epoch, num_steps
        self.meters: dict[str, AverageMeter] = {}
        self.grad_norm = AverageMeter()
        self.pending: list[PendingStep] = []

    def add(self, idx: int, lr: float, micro_batches: Sequence[Mapping[str, torch.Tensor]],
            losses: dict[str, torch.Tensor], grad_norm: torch.Tensor, finite: torch.Tensor) -> None:
        # a copy now: a replayed CUDA graph writes its next step's values into the same tensors
        values = torch.stack([finite.float(), grad_norm.float(), *(v.float() for v in losses.values())])  # [2 + L]
        size = sum(batch["image"].shape[0] for batch in micro_batches)
        self.pending.append(PendingStep(idx, lr, size, list(losses), values))

    def read(self) -> bool:
        """Record every pending step (a run that must stop stops here: the guard); whether the last was finite."""
        readings = torch.stack([step.values for step in self.pending]).tolist()  # [S, 2 + L]: the one device read
        for step, (ok, norm, *losses) in zip(self.pending, readings, strict=True):
            self._record(step, bool(ok), norm, dict(zip(step.names, losses, strict=True)))
        self.pending.clear()
        return bool(readings[-1][0])

    def _record(self, step: PendingStep, ok: bool, norm: float, values: dict[str, float]) -> None:
        """A skipped step: a warning and the guard; a finite one: the guard, the meters and the history."""
        state, epoch, iteration = self.state, self.epoch, self.epoch * self.num_steps + step.idx
        if not ok:
            state.logger.warning(f"Train: [{epoch}/{state.cfg.train.epochs}][{step.idx}/{self.num_steps}]  non-finite "
                                 f"loss ({values['total_loss']:.4g}) or gradient norm: optimizer step skipped "
                                 f"({state.guard.in_a_row + 1} in a row)")
        state.guard.update(ok, iteration, f"epoch {epoch}, step {step.idx}/{self.num_steps}")
        if not ok:
            return
        for name, value in values.items():
            self.meters.setdefault(name, AverageMeter()).update(value, step.size)
        if math.isfinite(norm):  # (not the fp16 grad scaler's overflow)
            self.grad_norm.update(norm)
            values["grad_norm"] = self.grad_norm.val
        state.history.steps.append({"epoch": epoch, "iteration": iteration, "lr": step.lr, **values})

    def averages(self) -> dict[str, float]:
        """The epoch's mean losses over its finite steps."""
        return {name: meter.avg for name, meter in self.meters.items()}
