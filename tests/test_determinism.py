"""Determinism: with a fixed seed on the CPU, two training runs give identical losses and weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers_train_data import write_tiny_setup

import main_group_vit
from training import loop

REAL_STEP = loop.train_step


def run(cfg: Path, out: Path, monkeypatch) -> list[dict[str, float]]:
    """Train (in this process) and return every iteration's losses, exactly."""
    seen: list[dict[str, float]] = []

    def recording_step(*args, **kwargs):
        losses, grad_norm, finite = REAL_STEP(*args, **kwargs)
        seen.append({k: v.item() for k, v in losses.items()} | {"grad_norm": grad_norm.item()})
        return losses, grad_norm, finite

    monkeypatch.setattr(loop, "train_step", recording_step)
    main_group_vit.main(["--cfg", str(cfg), "--output", str(out)])
    return seen


@pytest.mark.slow
def test_two_runs_give_identical_losses(tmp_path, monkeypatch):
    """Two worker processes, DeiT augmentation (RandAugment, random erasing) and drop-path: all seeded."""
    cfg = write_tiny_setup(tmp_path, epochs=2, train_length=2, num_workers=2, extra={"evaluate.task": []})
    first = run(cfg, tmp_path / "a", monkeypatch)
    second = run(cfg, tmp_path / "b", monkeypatch)
    assert len(first) == 2 and first == second  # one iteration in each of two epochs
    assert first[0]["total_loss"] != first[1]["total_loss"]  # real, changing losses
    a, b = (torch.load(tmp_path / name / "checkpoint.pth", weights_only=True) for name in "ab")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
