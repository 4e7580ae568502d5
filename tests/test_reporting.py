"""Reporting: TensorBoard scalars, Weights & Biases in offline mode (wandb is an optional dependency), and the
progress bar, which shows on an interactive terminal only."""

import io
import sys
import time

import pytest
from omegaconf import OmegaConf

from training import epoch_log
from training.reporting import Reporter


def run_cfg(tmp_path, wandb: bool):
    return OmegaConf.create({"output": str(tmp_path), "wandb": wandb, "model_name": "tiny_bs2x1", "tag": "default",
                             "checkpoint": {"auto_resume": True}, "train": {"base_lr": 1e-3}})


def test_wandb_offline_run_records_the_scalars(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    reporter = Reporter(run_cfg(tmp_path, wandb=True), logger=None)
    reporter.scalars({"iter/total_loss": 4.5, "iter/lr": 1e-4}, 0)
    reporter.scalars({"iter/total_loss": 3.25, "iter/lr": 2e-4}, 1)
    reporter.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))  # the record `wandb sync` uploads
    assert len(runs) == 1
    expected = (b"iter/total_loss", b"4.5", b"3.25", b"iter/lr", b"tiny_bs2x1/default", b"base_lr")
    for _ in range(100):  # wandb's service process may still be flushing its last records
        records = runs[0].read_bytes()  # protobuf records: the names and JSON values appear as UTF-8 text
        if all(text in records for text in expected):
            break
        time.sleep(0.1)
    assert [text for text in expected if text not in records] == []


def test_tensorboard_only_without_wandb(tmp_path):
    reporter = Reporter(run_cfg(tmp_path, wandb=False), logger=None)
    reporter.scalars({"epoch/acc1": 12.5}, 0)
    reporter.close()
    assert reporter.wandb is None and list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert not (tmp_path / "wandb").exists()


class Terminal(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("tty", [True, False])
def test_progress_bar_only_on_a_terminal(monkeypatch, tty):
    stderr = Terminal(tty)
    monkeypatch.setattr(sys, "stderr", stderr)
    with epoch_log.progress_bar(4, "epoch 0") as bar:
        shown = not bar.disable  # (closing sets disable)
        bar.update(4)
    assert shown is tty
    assert ("epoch 0" in stderr.getvalue()) is tty
