"""``train.cuda_graph``: the whole training step (forward, backward, clipping, the fused AdamW step, the grad scaler)
captured in one CUDA graph per input shape and text-length bucket, then replayed: one launch instead of a few
thousand kernels per step.

A replayed graph reads its inputs from fixed tensors, so each batch is copied into them, and it reads the learning
rate from fixed memory too: timm's scheduler writes ``param_group["lr"]`` as a float, which a graph would never see
(the rate would freeze at its value at capture). ``DeviceLR`` keeps every group's rate in a device tensor and copies
the scheduler's float into it before each step.

Each shape is first run eagerly ``warmup`` times on a side stream (real training steps: cuDNN/cuBLAS choose their
kernels, the optimizer and scaler create their state), then captured; capturing runs nothing, so the captured batch
is then replayed. One process only (DDP under graphs needs more care), fused AdamW, no gradient accumulation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from training.precision import Precision
from training.step import train_step
from utils.errors import UserError


class DeviceLR:
    """The optimizer's learning rates as 0-dim float32 tensors on ``device`` (always the same tensors).

    ``to_device()`` copies each group's float rate (as the scheduler wrote it) into its tensor and puts the tensor in
    the group, for the step; ``to_floats()`` puts the floats back (for logging and checkpoints)."""

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device):
        self.optimizer = optimizer
        self.tensors = [torch.tensor(float(g["lr"]), dtype=torch.float32, device=device)
                        for g in optimizer.param_groups]
        self.values = [float(g["lr"]) for g in optimizer.param_groups]

    def to_device(self) -> None:
        for index, (group, tensor) in enumerate(zip(self.optimizer.param_groups, self.tensors, strict=True)):
            if not torch.is_tensor(group["lr"]):
                self.values[index] = float(group["lr"])
                tensor.fill_(self.values[index])  # a host-to-device write: no wait
            group["lr"] = tensor

    def to_floats(self) -> None:
        for group, value in zip(self.optimizer.param_groups, self.values, strict=True):
            group["lr"] = value


class GraphedStep:
    """``train_step`` (one batch, stepping) as CUDA graphs, one per (image shape, text shape, text lengths)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 precision: Precision, clip_grad: float | None, warmup: int = 3):
        device = next(model.parameters()).device
        if device.type != "cuda":
            raise UserError("train.cuda_graph needs a CUDA device")
        if not getattr(optimizer, "_step_supports_amp_scaling", False):
            raise UserError("train.cuda_graph needs the fused AdamW optimizer (its step is decided on the device)")
        for group in optimizer.param_groups:
            group["capturable"] = True
        self.model, self.optimizer, self.scaler = model, optimizer, scaler
        self.precision, self.clip_grad, self.warmup = precision, clip_grad, warmup
        self.lr = DeviceLR(optimizer, device)
        self.seen: Counter = Counter()
        self.graphs: dict[Any, tuple[torch.cuda.CUDAGraph, dict[str, torch.Tensor], tuple]] = {}

    def __call__(self, batch: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        key = tuple((k, tuple(v.shape), v.dtype) if torch.is_tensor(v) else (k, v) for k, v in sorted(batch.items()))
        self.lr.to_device()
        try:
            if key in self.graphs:
                graph, inputs, outputs = self.graphs[key]
                for name, value in batch.items():
                    if torch.is_tensor(value):
                        inputs[name].copy_(value, non_blocking=True)
                graph.replay()
                return outputs
            self.seen[key] += 1
            if self.seen[key] <= self.warmup:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    result = self._eager(batch)
                torch.cuda.current_stream().wait_stream(side)
                return result
            inputs = {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()}
            graph = torch.cuda.CUDAGraph()
            self.optimizer.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph):
                outputs = self._eager(inputs)
            self.graphs[key] = (graph, inputs, outputs)
            graph.replay()  # capturing ran nothing: this batch's step
            return outputs
        finally:
            self.lr.to_floats()

    def _eager(self, batch: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        losses, grad_norm, finite = train_step(self.model, batch, self.optimizer, self.scaler, self.precision,
                                               self.clip_grad)
        return losses, grad_norm, finite
