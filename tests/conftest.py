"""Shared fixtures: the golden reference outputs and the tiny model loaded from the official-layout checkpoint."""

import logging
from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="session")
def golden() -> dict:
    return torch.load(GOLDEN / "tiny_golden.pt", weights_only=True)


@pytest.fixture(scope="session")
def tiny_ckpt() -> dict:
    from utils.checkpoint import load_checkpoint

    return load_checkpoint(str(GOLDEN / "tiny_official_ckpt.pth"))


@pytest.fixture(scope="session")
def tiny_model(tiny_ckpt):
    """The tiny golden model in eval mode, built from the checkpoint's own config and strictly loaded."""
    from models import build_model
    from utils.checkpoint import load_model_state

    model = build_model(tiny_ckpt["config"].model)
    load_model_state(model, tiny_ckpt["model"], strict=True)
    return model.eval()


@pytest.fixture
def warnings_of_the_loader():
    """Warning messages of the data logger, collected by a handler attached to it."""
    records: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    data_logger = logging.getLogger("groupvit.data")
    data_logger.addHandler(handler)
    yield records
    data_logger.removeHandler(handler)
