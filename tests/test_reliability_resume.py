"""Crash and resume: a training process killed with SIGKILL (during a step, during a checkpoint write) leaves only
complete checkpoints, and the rerun resumes from the last one to exactly the uninterrupted run's losses and weights."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import helpers_commands as commands
import pytest
import torch
from helpers_train_data import write_tiny_setup

from datasets.builder import build_train_loader
from training.rng import set_random_seed
from utils.checkpoint import load_checkpoint, remove_partial_saves, save_checkpoint
from utils.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PARTIAL = re.compile(r"^\..+\.tmp$")  # save_checkpoint's temporary names
# Per iteration: epoch, step, lr, the losses and the gradient norm (the timing fields differ between runs).
TRAIN_LINE = re.compile(r"Train: \[(\d+)/\d+\]\[(\d+)/\d+\]  eta \S+  lr (\S+)  time \S+ \(\S+\)  (.*)  "
                        r"grad_norm (\S+)")


def start(cfg: Path, out: Path) -> commands.Command:
    """``main_group_vit.py --cfg cfg --output out`` (from helpers_commands' warm Python); its stdout and stderr
    together in out/../{out.name}-output.txt."""
    output = out.parent / f"{out.name}-output.txt"
    return commands.start(["main_group_vit.py", "--cfg", str(cfg), "--output", str(out)], output, stdout=output)


def finish(process: commands.Command) -> str:
    process.wait(timeout=600)
    assert process.returncode == 0, process.stderr()
    return process.stderr()


def kill_when(cfg: Path, out: Path, condition: Callable[[], bool]) -> None:
    """Run training and SIGKILL it as soon as ``condition()`` holds (polled every millisecond or so)."""
    process = start(cfg, out)
    while not condition():
        assert process.poll() is None, f"the run ended before the kill point:\n{process.stderr()}"
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


def partial_saves(out: Path) -> list[str]:
    return [name for name in os.listdir(out) if PARTIAL.match(name)] if out.is_dir() else []


def log_has(out: Path, text: str) -> Callable[[], bool]:
    log = out / "log.txt"
    return lambda: log.is_file() and text in log.read_text()


def checkpoint_epochs(out: Path) -> dict[str, int]:
    """Every *.pth of the folder loads completely (safe loader); their epochs by file name."""
    epochs = {}
    for path in sorted(out.glob("*.pth")):
        ckpt = load_checkpoint(path)
        assert set(ckpt) >= {"model", "optimizer", "lr_scheduler", "epoch"}, path
        epochs[path.name] = ckpt["epoch"]
    return epochs


def iterations(output: str) -> list[tuple[str, ...]]:
    return TRAIN_LINE.findall(output)


@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path):
    """2 epochs of 2 iterations, CPU, fixed seed. Killed (a) in epoch 1's second step, (b) while writing epoch 1's
    checkpoint; (c) the rerun resumes from epoch 0's checkpoint and ends exactly where the reference run ends."""
    cfg = write_tiny_setup(tmp_path, epochs=2, train_length=4, extra={"evaluate.task": []})
    reference = start(cfg, tmp_path / "reference")
    out = tmp_path / "crashed"

    kill_when(cfg, out, log_has(out, "Train: [1/2][0/2]"))  # (a)
    assert checkpoint_epochs(out) == {"checkpoint.pth": 0, "ckpt_epoch_0.pth": 0} and not partial_saves(out)

    for _ in range(3):  # (b) the temporary file shows the write in progress; a late kill just tries again
        kill_when(cfg, out, lambda: bool(partial_saves(out)))
        if partial_saves(out):
            break
    assert partial_saves(out), "no kill landed during a checkpoint write"
    assert checkpoint_epochs(out)["checkpoint.pth"] == 0  # epoch 1's checkpoint.pth was never completed

    resumed = finish(start(cfg, out))  # (c)
    assert f"resumed from {out / 'checkpoint.pth'} (epoch 0;" in resumed
    assert "removed 1 incomplete checkpoint file(s) of an interrupted run" in resumed and not partial_saves(out)
    expected = finish(reference)
    assert len(iterations(expected)) == 4 and iterations(resumed) == iterations(expected)[2:]
    assert checkpoint_epochs(out) == {"checkpoint.pth": 1, "ckpt_epoch_0.pth": 0, "ckpt_epoch_1.pth": 1}
    final, uninterrupted = (torch.load(d / "checkpoint.pth", weights_only=True) for d in (out, tmp_path / "reference"))
    for key in ("model", "optimizer", "lr_scheduler"):
        assert identical(final[key], uninterrupted[key]), key


def identical(a, b) -> bool:
    """Nested containers with bit-identical tensors."""
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(identical, a, b))
    return a == b


@pytest.mark.parametrize("num_workers", [0, 2])
def test_an_epochs_batches_depend_only_on_its_number(tmp_path, num_workers):
    """The data side of 'resumed == uninterrupted': epoch 1 of a loader that ran epoch 0 equals epoch 1 of a loader
    that starts there (the training loop reseeds the process RNGs per epoch, as here)."""
    cfg = load_config(write_tiny_setup(tmp_path, train_length=6, num_workers=num_workers))

    def epoch_batches(loader, seed):
        set_random_seed(seed)
        return list(loader)

    uninterrupted = build_train_loader(cfg.data)
    epoch_batches(uninterrupted, 10)
    resumed = build_train_loader(cfg.data)
    resumed.set_first_epoch(1)
    for a, b in zip(epoch_batches(uninterrupted, 11), epoch_batches(resumed, 11), strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["text"], b["text"])
    assert uninterrupted.epoch == resumed.epoch == 2


def test_partial_saves_are_removed_and_nothing_else(tmp_path):
    save_checkpoint({"model": {"w": torch.ones(1)}}, tmp_path / "checkpoint.pth")
    leftovers = [".checkpoint.pth.0123abcd.tmp", ".ckpt_epoch_3.pth.deadbeef.tmp"]
    keep = ["log.txt", ".hidden.tmp", "ckpt_epoch_3.pth", ".checkpoint.pth.not-hex.tmp"]
    for name in leftovers + keep:
        (tmp_path / name).write_bytes(b"partial")
    assert sorted(p.name for p in remove_partial_saves(tmp_path)) == sorted(leftovers)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["checkpoint.pth", *keep])
