"""Step checkpoints (``checkpoint.save_steps``): a run killed with SIGKILL at random steps, some while it writes a
checkpoint, and rerun with the same command each time, ends bit-identical to an uninterrupted run; a Ctrl-C after a
step checkpoint names it in the stop line; under torchrun with ``--max-restarts 1``, a killed worker makes the group
restart and resume from the last step checkpoint."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import helpers_commands as commands
import pytest
import torch
from helpers_train_data import write_tiny_setup
from test_distributed import clean_env, free_port
from test_reliability_faults import CHECKPOINT_NAMED, check_stop_line, interrupt_command
from test_reliability_resume import PARTIAL, identical, partial_saves

from utils.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"evaluate.task": [], "checkpoint.save_steps": 1, "data.img_aug.img_size": 64,
         "model.img_encoder.img_size": 64}  # drop path and Gumbel noise stay on: the RNG states must be restored
LOSS_LINE = re.compile(r"Train: \[(\d+)/\d+\]\[(\d+)/\d+\]  eta \S+  lr (\S+)  time \S+ \(\S+\)  total_loss (\S+) ")


def start(cfg: Path, out: Path, run: str) -> commands.Command:
    """``main_group_vit.py --cfg cfg --output out`` (from helpers_commands' warm Python); its stderr in
    out/../stderr-{run}.txt."""
    return commands.start(["main_group_vit.py", "--cfg", str(cfg), "--output", str(out)],
                          out.parent / f"stderr-{run}.txt")


def new_log(out: Path, offset: int) -> str:
    log = out / "log.txt"
    return log.read_text()[offset:] if log.is_file() else ""


def all_complete(out: Path) -> None:
    """Every *.pth loads completely (safe loader) with the training state; no partial save has a *.pth name."""
    for path in out.glob("*.pth"):
        assert not PARTIAL.match(path.name)
        assert set(load_checkpoint(path)) >= {"model", "optimizer", "lr_scheduler", "epoch"}, path


def kill_point(text: str, awaited: str, writing: bool) -> bool:
    """The awaited log line is there, or a save is being written once the run is past its start (which removes the
    partial saves of earlier runs)."""
    return awaited in text or (writing and ("resumed from" in text or "Train: [" in text))


@pytest.mark.slow
def test_ten_kills_at_random_steps_end_bit_identical(tmp_path):
    """2 epochs of 6 steps; 10 kills at random steps in turn, 3 of them while checkpoint.pth is being written. (One
    loader worker: the augmentations draw from the worker's RNGs, which the epoch's seeds fix.)"""
    cfg = write_tiny_setup(tmp_path, epochs=2, train_length=12, num_workers=1, extra=SMALL)
    reference = start(cfg, tmp_path / "reference", "reference")
    out = tmp_path / "crashed"
    rng = random.Random(14)
    steps = sorted(rng.sample(range(1, 12), 10))  # the global step whose log line (or save) is awaited
    during_write = set(rng.sample(steps, 3))
    writes = 0
    for step in steps:
        epoch, idx = divmod(step, 6)
        offset = len((out / "log.txt").read_text()) if (out / "log.txt").is_file() else 0
        process = start(cfg, out, f"kill-{step}")
        awaited, in_write = f"Train: [{epoch}/2][{idx}/6]", step in during_write
        while not kill_point(new_log(out, offset), awaited, in_write and bool(partial_saves(out))):
            assert process.poll() is None, process.stderr()[-3000:]
            time.sleep(0.001)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        writes += bool(partial_saves(out))
        all_complete(out)
    assert writes >= 1, "no kill landed during a checkpoint write"

    final = start(cfg, out, "final")
    assert final.wait(timeout=600) == 0, final.stderr()[-3000:]
    assert reference.wait(timeout=600) == 0, reference.stderr()[-3000:]
    log = (out / "log.txt").read_text()
    assert len(re.findall(r"resumed from \S+checkpoint.pth \(epoch \d, after iteration \d", log)) >= 5
    assert not partial_saves(out)
    expected = {(e, i): rest for e, i, *rest in LOSS_LINE.findall((tmp_path / "reference" / "log.txt").read_text())}
    seen = {(e, i): rest for e, i, *rest in LOSS_LINE.findall(log)}
    assert len(expected) == 12 and len(seen) >= 10 and all(expected[k] == v for k, v in seen.items())
    got, want = (torch.load(d / "checkpoint.pth", weights_only=True) for d in (out, tmp_path / "reference"))
    for key in ("model", "optimizer", "lr_scheduler"):
        assert identical(got[key], want[key]), key


@pytest.mark.slow
def test_a_stop_after_a_step_checkpoint_names_it(tmp_path):
    """Ctrl-C in epoch 1 after a step checkpoint: the stop line names checkpoint.pth, the step checkpoint, not the
    older ckpt_epoch_0.pth, and that file holds the steps trained in epoch 1."""
    cfg = write_tiny_setup(tmp_path, epochs=2, train_length=12, num_workers=0, extra=SMALL)
    out, log = tmp_path / "out", tmp_path / "out" / "log.txt"
    saved = f"saved {out / 'checkpoint.pth'} (epoch 1, after iteration 2/6)"
    stopped = interrupt_command(["main_group_vit.py", "--cfg", str(cfg), "--output", str(out)],
                                lambda: log.is_file() and saved in log.read_text(), signal.SIGINT, 0.0, to_group=True,
                                stderr_path=tmp_path / "stderr.txt")
    named = CHECKPOINT_NAMED.search(check_stop_line(stopped, signal.SIGINT)[3])
    assert named and Path(named[1]) == out / "checkpoint.pth", stopped.stderr
    assert (out / "ckpt_epoch_0.pth").is_file()
    checkpoint = load_checkpoint(named[1])
    assert checkpoint["epoch"] == 1 and checkpoint["epoch_iterations"] >= 2


def worker_pids(pid: int) -> list[int]:
    """torchrun's workers: its child processes that run main_group_vit.py."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in map(int, task.read_text().split()):
            cmdline = Path(f"/proc/{child}/cmdline")
            if cmdline.is_file() and b"main_group_vit.py" in cmdline.read_bytes():
                found.append(child)
    return found


def elastic_run(tmp_path: Path) -> tuple[int | None, str, Path]:
    """One torchrun --max-restarts 1 run in which worker 1 is killed after step 2 was saved: (exit code or None when
    it hung for 150 s, the tail of its stderr, its output folder). A healthy run takes 30-80 s in the full suite."""
    cfg = write_tiny_setup(tmp_path, epochs=2, train_length=16, extra=SMALL)
    out = tmp_path / "out"
    run = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2", "--max-restarts", "1",
         "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
         "main_group_vit.py", "--cfg", str(cfg), "--output", str(out)],
        cwd=ROOT, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    saved = "saved " + str(out / "checkpoint.pth") + " (epoch 0, after iteration 2/4)"
    while saved not in new_log(out, 0):
        assert run.poll() is None, run.communicate()[1][-3000:]
        time.sleep(0.01)
    workers = worker_pids(run.pid)
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGKILL)
    try:
        code = run.wait(timeout=150)
    except subprocess.TimeoutExpired:
        for pid in worker_pids(run.pid):
            os.kill(pid, signal.SIGKILL)
        run.kill()
        return None, run.communicate()[1][-3000:], out
    return code, run.communicate()[1][-3000:], out


@pytest.mark.slow
def test_elastic_restart_resumes_from_the_last_step_checkpoint(tmp_path):
    """torchrun --max-restarts 1, 2 gloo processes, 2 epochs of 4 steps: one worker is killed after step 2 was saved;
    the group restarts, resumes after iteration 2 and makes exactly the 8 steps of the run. (torchrun's store outlives
    the dead group: the restarted group must not read the dead one's keys, see utils.distributed.)"""
    code, stderr, out = elastic_run(tmp_path)
    assert code == 0, stderr
    log = (out / "log.txt").read_text()
    assert log.count("world size 2") == 2  # the first start and the restart
    assert f"resumed from {out / 'checkpoint.pth'} (epoch 0, after iteration 2;" in log
    ckpt = torch.load(out / "checkpoint.pth", weights_only=True)
    assert ckpt["epoch"] == 1 and "epoch_iterations" not in ckpt
    assert {float(s["step"]) for s in ckpt["optimizer"]["state"].values()} == {8.0}
