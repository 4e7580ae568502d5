"""``eval_mode(model)``: a model in eval mode for the length of a ``with`` block, its mode restored afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from utils.distributed import unwrap


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Yield ``model`` (the module inside a DistributedDataParallel wrapper) in eval mode; on leaving, its
    training mode is what it was, whatever happened in the block."""
    model = unwrap(model)
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
