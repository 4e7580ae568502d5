"""What an epoch shows as it trains: the progress bar (an interactive terminal only), the reference's 'Train:' log
line with the reporter's 'iter/' scalars, and the closing 'EPOCH ... training takes' line."""

from __future__ import annotations

import datetime
import sys
import time
from contextlib import ExitStack
from typing import Any

import torch
from timm.utils import AverageMeter
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from training.readings import StepReadings
from training.state import RunState
from utils.distributed import get_rank


def progress_bar(total: int, desc: str, initial: int = 0) -> tqdm:
    """A tqdm bar on an interactive terminal (rank 0); disabled (nothing printed) for files and pipes."""
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=False,
                disable=get_rank() != 0 or not sys.stderr.isatty())


class EpochLog:
    """An epoch's bar, step times and log lines; a context manager (the bar, and log records written through it)."""

    def __init__(self, state: RunState, epoch: int, num_steps: int, first: int):
        self.state, self.epoch, self.num_steps, self.first = state, epoch, num_steps, first
        self.accumulation = max(1, state.cfg.train.accumulation_steps)
        self.step_time = AverageMeter()
        self.start = self.end = time.time()
        self.stack = ExitStack()

    def __enter__(self) -> EpochLog:
        self.stack.enter_context(logging_redirect_tqdm([self.state.logger]))
        self.bar = self.stack.enter_context(progress_bar(self.num_steps, f"epoch {self.epoch}", self.first))
        return self

    def __exit__(self, *error: Any) -> None:
        self.stack.close()

    def step_done(self) -> None:
        self.bar.update(self.accumulation)
        self.step_time.update(time.time() - self.end)
        self.end = time.time()

    def line(self, idx: int, lr: float, readings: StepReadings) -> None:
        """The log line after iteration ``idx`` (a step that ran with ``lr``), and the same scalars to the reporter."""
        state, meters, norm = self.state, readings.meters, readings.grad_norm
        self.bar.set_postfix(loss=f"{meters['total_loss'].val:.4f}", lr=f"{lr:.3g}", refresh=False)
        eta = datetime.timedelta(seconds=int(self.step_time.avg * (self.num_steps - idx - 1) / self.accumulation))
        memory = f"  mem {torch.cuda.max_memory_allocated() / 2**20:.0f}MB" if state.device.type == "cuda" else ""
        losses = "  ".join(f"{k} {m.val:.4f} ({m.avg:.4f})" for k, m in meters.items())
        state.logger.info(f"Train: [{self.epoch}/{state.cfg.train.epochs}][{idx}/{self.num_steps}]  eta {eta}  "
                          f"lr {lr:.4e}  time {self.step_time.val:.4f} ({self.step_time.avg:.4f})  {losses}  "
                          f"grad_norm {norm.val:.4f} ({norm.avg:.4f}){memory}")
        if state.reporter is not None:
            scalars = {f"iter/{k}": m.val for k, m in meters.items()}
            state.reporter.scalars({**scalars, "iter/lr": lr, "iter/grad_norm": norm.val},
                                   self.epoch * self.num_steps + idx)

    def epoch_done(self, counts: Any) -> None:
        """The epoch's last line: its time, the bad samples the loader skipped (``counts``), the non-finite steps."""
        took = datetime.timedelta(seconds=int(time.time() - self.start))
        self.state.logger.info(f"EPOCH {self.epoch} training takes {took}; skipped: {counts.skipped} bad samples of "
                               f"{counts.read} read, {self.state.guard.in_epoch} non-finite steps")
