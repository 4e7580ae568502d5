"""The training loop: one epoch of steps (``train_one_epoch``) and the epochs with their evaluation, checkpoints
and reports (``run_epochs``). Everything else is one call each: the step (``state.step``: plain, accumulated or
CUDA-graphed, chosen once by ``build_step``), the saves (``training.checkpointing.save_after_step``,
``save_after_epoch``), what the steps measured (``training.readings.StepReadings``: meters, history, warnings, the
non-finite guard) and what an epoch shows (``training.epoch_log.EpochLog``: bar, log lines, reporter).

An optimizer step takes ``train.accumulation_steps`` (K) consecutive iterations of the loader as its micro-batches
(K <= 1: one batch per step); the schedule counts iterations, as the reference's does. With
``checkpoint.save_steps`` = N > 0, ``checkpoint.pth`` is also written after every N-th optimizer step of the run,
holding where the epoch stands and the RNG states; a run resumed from it reads and drops the epoch's batches it
already trained on, sets the RNG states and continues where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from omegaconf import DictConfig

from datasets.builder import DeviceFeeder, DeviceImages
from training.checkpointing import save_after_epoch, save_after_step
from training.epoch_evaluation import evaluate_epoch
from training.epoch_log import EpochLog
from training.graphs import GraphedStep
from training.precision import Precision
from training.readings import StepReadings
from training.rng import epoch_seed, set_random_seed, set_rng_state
from training.state import History, RunState
from training.step import Step, accumulated_step, train_step
from utils.distributed import get_rank, get_world_size
from utils.errors import UserError


class SkipTrained:
    """An epoch's batches without its first ``skip`` (read and dropped: the batches a resumed run trained before;
    the stream's own seeds make the rest the same batches); ``len`` and ``counts`` are the loader's."""

    def __init__(self, loader: Any, skip: int):
        self.loader, self.skip = loader, skip

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def counts(self) -> Any:
        return self.loader.counts

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for index, batch in enumerate(self.loader):
            if index >= self.skip:
                yield batch


def build_step(cfg: DictConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, precision: Precision) -> Step:
    """The run's step, chosen once: CUDA graphs (``train.cuda_graph``), the feature-cache accumulation
    (``train.accumulation_steps`` > 1) or one batch. Built after the optimizer state is loaded (a graph keeps it)."""
    accumulation, clip_grad = cfg.train.accumulation_steps, cfg.train.clip_grad
    if cfg.train.cuda_graph:
        if get_world_size() > 1 or accumulation > 1:
            raise UserError("train.cuda_graph runs one process without gradient accumulation")
        graphed = GraphedStep(model, optimizer, scaler, precision, clip_grad)
        return lambda micro_batches: graphed(micro_batches[0])
    if accumulation > 1:
        return lambda micro_batches: accumulated_step(model, micro_batches, optimizer, scaler, precision, clip_grad)
    return lambda micro_batches: train_step(model, micro_batches[0], optimizer, scaler, precision, clip_grad)


def train_one_epoch(state: RunState, epoch: int) -> dict[str, float]:
    """One epoch of ``len(state.train_loader)`` iterations; returns its mean losses over the finite steps (a
    non-finite step is skipped, warned about and counted: ``StepReadings``).

    The RNGs are reseeded from (``cfg.seed``, rank, epoch) first; a run resumed from a step checkpoint starts at
    ``state.resume_iteration`` and sets the process RNGs to the checkpoint's before its first step (exact when
    ``data.num_workers`` > 0; with 0 the augmentations draw from the same RNGs, one batch ahead, and differ after
    the resume). The host never waits for the device inside a step: the batches come one ahead (``DeviceFeeder``)
    and the steps' values are read at the log lines (``StepReadings``), every ``print_freq`` iterations and the last.
    """
    cfg, skip, rng = state.cfg, state.resume_iteration, state.resume_rng
    state.resume_iteration, state.resume_rng = 0, None  # a resume point is used once
    loader = DeviceFeeder(SkipTrained(state.train_loader, skip), state.device,
                          DeviceImages(True, cfg.data.img_aug, state.device), cfg.train.text_length_multiple)
    set_random_seed(epoch_seed(cfg.seed, get_rank(), get_world_size(), epoch))
    state.model.train()
    state.guard.start_epoch()
    state.optimizer.zero_grad(set_to_none=True)
    num_steps, accumulation = len(loader), max(1, cfg.train.accumulation_steps)
    readings = StepReadings(state, epoch, num_steps)
    micro_batches: list[dict[str, Any]] = []
    with EpochLog(state, epoch, num_steps, skip) as log:
        for idx, batch in enumerate(loader, start=skip):
            state.progress.now_doing(f"training epoch {epoch}, step {idx}/{num_steps}")
            micro_batches.append(batch)
            if len(micro_batches) < accumulation:
                continue
            if rng is not None:  # the first step after a resume: the RNGs as they were at the checkpoint
                set_rng_state(rng)
                rng = None
            lr = state.optimizer.param_groups[0]["lr"]  # the rate this step runs with
            readings.add(idx, lr, micro_batches, *state.step(micro_batches))
            micro_batches = []
            state.scheduler.step_update(epoch * num_steps + idx)  # the schedule counts iterations
            save_after_step(state, epoch, idx, num_steps)
            log.step_done()
            if (idx % cfg.print_freq < accumulation or idx == num_steps - 1) and readings.read():
                log.line(idx, lr, readings)  # (the reference logs only after a finite step)
    log.epoch_done(loader.counts)
    return readings.averages()


def run_epochs(state: RunState) -> History:
    """Epochs ``state.start_epoch`` .. ``train.epochs - 1``: train, evaluate every ``evaluate.eval_freq`` epochs (and
    the last), save checkpoints every ``checkpoint.save_freq`` epochs (the last, and a new best), report."""
    cfg, logger, history = state.cfg, state.logger, state.history
    metrics = history.best
    try:
        for epoch in range(state.start_epoch, cfg.train.epochs):
            state.progress.now_doing(f"training epoch {epoch} (of {state.start_epoch}-{cfg.train.epochs - 1})")
            losses = train_one_epoch(state, epoch)
            results, best, last = {}, [], epoch == cfg.train.epochs - 1
            if epoch % cfg.evaluate.eval_freq == 0 or last:
                state.progress.now_doing(f"evaluating after epoch {epoch}")
                results, best, state.run_seg = evaluate_epoch(cfg, state.model, state.val_loader, state.run_seg,
                                                              metrics, state.precision, state.device, logger)
            if epoch % cfg.checkpoint.save_freq == 0 or last or best:
                save_after_epoch(state, epoch, best)
            if state.reporter is not None:
                scalars = {f"epoch/{k}": v for k, v in {**results, **metrics}.items() if k != "num_images"}
                state.reporter.scalars(scalars, epoch)
            history.epochs.append({"epoch": epoch, **losses, **results})
            logger.info(f"epoch {epoch}: max accuracy {metrics['max_accuracy']:.2f}%, "
                        f"max mIoU {metrics['max_miou']:.2f}")
    except UserError as e:  # e.g. too many bad samples or non-finite steps: the log says why the run stopped
        logger.error(str(e))
        raise
    finally:
        if state.reporter is not None:
            state.reporter.close()
    return history
