"""The process RNGs (python, numpy, torch): seeding, and their states as plain data for step checkpoints."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def set_random_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_seed(seed: int, rank: int, world_size: int, epoch: int) -> int:
    """The seed of one process's epoch: distinct for every (rank, epoch) and from the start seeds ``seed + rank``."""
    return seed + rank + (epoch + 1) * world_size


def torch_rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """torch's CPU generator state and, on CUDA, ``device``'s (what DropPath and the Gumbel noise draw from)."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def set_torch_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def rng_state() -> dict[str, Any]:
    """Every RNG state of this process as tensors, lists and numbers (what ``save_checkpoint`` can write)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss], "numpy": [kind, torch.from_numpy(keys.astype(np.int64)),
                                                                    int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
