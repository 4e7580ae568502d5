"""Seeding of the process RNGs (python, numpy, torch)."""

from __future__ import annotations

import random

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
