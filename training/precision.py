"""Mixed precision of a run: ``train.amp`` (auto | fp32 | fp16 | bf16) resolved for a device."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from utils.errors import UserError


@dataclass(frozen=True)
class Precision:
    """Mixed precision of a run: the autocast dtype (None = float32) and whether a GradScaler is used."""

    name: str
    dtype: torch.dtype | None
    use_scaler: bool

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None)


FP32 = Precision("fp32", None, use_scaler=False)  # float32, no autocast: evaluations and experiments outside a run


def resolve_precision(train_cfg: DictConfig, device: torch.device) -> Precision:
    """``train.amp`` (auto | fp32 | fp16 | bf16) for ``device``.

    'auto' follows ``train.amp_opt_level``: O0 is float32; O1 and O2 (apex's levels) become float16 autocast
    with a dynamic loss scaler on CUDA, and float32 on the CPU. bf16 autocasts without a scaler on either device.
    """
    amp = train_cfg.get("amp", "auto")
    if amp == "auto":
        amp = "fp16" if train_cfg.amp_opt_level != "O0" and device.type == "cuda" else "fp32"
    if amp == "fp16" and device.type != "cuda":
        raise UserError("train.amp=fp16 needs CUDA; use bf16 or fp32 on the CPU")
    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]
    return Precision(amp, dtype, use_scaler=amp == "fp16")
