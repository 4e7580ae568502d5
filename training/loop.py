"""The training loop: one epoch of steps (``train_one_epoch``) and the epochs with their evaluation, checkpoints
and reports (``run_epochs``).

An optimizer step takes ``train.accumulation_steps`` (K) consecutive iterations of the loader as its micro-batches
(K <= 1: one batch per step); the schedule counts iterations, as the reference's does. With
``checkpoint.save_steps`` = N > 0, ``checkpoint.pth`` is also written after every N-th optimizer step of the run,
holding where the epoch stands and the RNG states; a run resumed from it reads and drops the epoch's batches it
already trained on, sets the RNG states and continues where it stopped.
"""

from __future__ import annotations

import datetime
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from timm.utils import AverageMeter
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from datasets.builder import DeviceFeeder, DeviceImages
from training.checkpointing import save_epoch_checkpoint, save_run_config, save_step_checkpoint, training_state
from training.evaluate import evaluate_epoch
from training.rng import epoch_seed, set_random_seed, set_rng_state
from training.state import History, RunState
from training.step import accumulated_step, train_step
from utils import interrupt
from utils.distributed import get_rank, get_world_size
from utils.errors import UserError


def progress_bar(total: int, desc: str, initial: int = 0) -> tqdm:
    """A tqdm bar on an interactive terminal (rank 0); disabled (nothing printed) for files and pipes."""
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=False,
                disable=get_rank() != 0 or not sys.stderr.isatty())


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


def train_one_epoch(state: RunState, epoch: int) -> dict[str, float]:
    """One epoch of ``len(state.train_loader)`` iterations; the scheduler is stepped per optimizer step, after it.
    Returns the epoch's mean losses; every iteration with a finite loss is added to ``state.history.steps``.

    The RNGs are reseeded from (``cfg.seed``, rank, epoch) first. Iterations with a non-finite loss or gradient norm
    are logged, left out of the averages and counted by ``state.guard``; the epoch's last log line counts them and
    the bad samples the loader skipped. A run resumed from a step checkpoint starts at ``state.resume_iteration``
    and sets the process RNGs to the checkpoint's before its first step (exact when ``data.num_workers`` > 0; with
    0 the augmentations draw from the same RNGs, one batch ahead, and differ after the resume).

    The host never waits for the device inside a step: the batches come one ahead (``DeviceFeeder``), and each
    iteration's losses, norm and finite flag stay on the device until the next log line (every ``print_freq``
    iterations, and the last), which reads them all at once and then does what each iteration asks, in order
    (meters, history, warnings, the guard: a run that must stop stops there).
    """
    cfg, model, guard, logger = state.cfg, state.model, state.guard, state.logger
    skip, rng, state.resume_iteration, state.resume_rng = state.resume_iteration, state.resume_rng, 0, None
    loader = DeviceFeeder(SkipTrained(state.train_loader, skip), state.device,
                          DeviceImages(True, cfg.data.img_aug, state.device), cfg.train.text_length_multiple)
    set_random_seed(epoch_seed(cfg.seed, get_rank(), get_world_size(), epoch))
    model.train()
    num_steps = len(loader)
    accumulation = max(1, cfg.train.accumulation_steps)
    meters: dict[str, AverageMeter] = {}
    batch_time, norm_meter = AverageMeter(), AverageMeter()
    pending: list[tuple[int, float, int, list[str], torch.Tensor]] = []  # (idx, lr, batch size, names, values)
    micro_batches: list[dict[str, Any]] = []
    guard.start_epoch()
    state.optimizer.zero_grad(set_to_none=True)
    start = end = time.time()
    with logging_redirect_tqdm([logger]), progress_bar(num_steps, f"epoch {epoch}", skip) as bar:
        for idx, batch in enumerate(loader, start=skip):
            interrupt.now_doing(f"training epoch {epoch}, step {idx}/{num_steps}")
            micro_batches.append(batch)
            if len(micro_batches) < accumulation:
                continue
            if rng is not None:  # the first step after a resume: the RNGs as they were at the checkpoint
                set_rng_state(rng)
                rng = None
            lr = state.optimizer.param_groups[0]["lr"]  # the rate this step runs with
            if state.graphed_step is not None:  # train.cuda_graph (one process, no accumulation)
                losses, grad_norm, finite = state.graphed_step(batch)
            elif accumulation == 1:
                losses, grad_norm, finite = train_step(model, batch, state.optimizer, state.scaler, state.precision,
                                                       cfg.train.clip_grad)
            else:
                losses, grad_norm, finite = accumulated_step(model, micro_batches, state.optimizer, state.scaler,
                                                             state.precision, cfg.train.clip_grad)
            size = sum(b["image"].shape[0] for b in micro_batches)
            micro_batches = []
            iteration = epoch * num_steps + idx
            state.scheduler.step_update(iteration)
            bar.update(accumulation)
            if not state.config_saved:  # a run stopped by bad input or data before this leaves config.yml alone
                save_run_config(cfg)
                state.config_saved = True
            if cfg.checkpoint.save_steps and ((iteration + 1) // accumulation) % cfg.checkpoint.save_steps == 0 \
                    and idx + accumulation < num_steps:  # (the epoch's end has its own checkpoints)
                ckpt = training_state(model, state.optimizer, state.scheduler, state.scaler, epoch,
                                      state.history.best, cfg)
                guard.last_checkpoint = str(save_step_checkpoint(cfg.output, ckpt, idx + 1))
                logger.info(f"saved {guard.last_checkpoint} (epoch {epoch}, after iteration {idx + 1}/{num_steps})")
                interrupt.progress.resume = interrupt.checkpoint_hint(guard.last_checkpoint, cfg.checkpoint.auto_resume)
            pending.append((idx, lr, size, list(losses),
                            torch.stack([finite.float(), grad_norm.float(), *(v.float() for v in losses.values())])))
            batch_time.update(time.time() - end)
            end = time.time()
            if not (idx % cfg.print_freq < accumulation or idx == num_steps - 1):
                continue
            readings = torch.stack([values for *_, values in pending]).tolist()  # the one read of the device
            for (i, lr_i, size_i, names, _), (ok, norm_value, *loss_values) in zip(pending, readings, strict=True):
                values = dict(zip(names, loss_values, strict=True))
                if not ok:
                    logger.warning(f"Train: [{epoch}/{cfg.train.epochs}][{i}/{num_steps}]  non-finite loss "
                                   f"({values['total_loss']:.4g}) or gradient norm: optimizer step skipped "
                                   f"({guard.in_a_row + 1} in a row)")
                guard.update(bool(ok), epoch * num_steps + i, f"epoch {epoch}, step {i}/{num_steps}")
                if not ok:
                    continue
                for name, value in values.items():
                    meters.setdefault(name, AverageMeter()).update(value, size_i)
                if math.isfinite(norm_value):  # (not the fp16 grad scaler's overflow)
                    norm_meter.update(norm_value)
                    values["grad_norm"] = norm_meter.val
                state.history.steps.append({"epoch": epoch, "iteration": epoch * num_steps + i, "lr": lr_i,
                                            **values})
            pending.clear()
            if not readings[-1][0]:  # the reference logs only after a finite iteration
                continue
            bar.set_postfix(loss=f"{meters['total_loss'].val:.4f}", lr=f"{lr:.3g}", refresh=False)
            eta = datetime.timedelta(seconds=int(batch_time.avg * (num_steps - idx - 1) / accumulation))
            memory = f"  mem {torch.cuda.max_memory_allocated() / 2**20:.0f}MB" if state.device.type == "cuda" else ""
            losses_text = "  ".join(f"{k} {m.val:.4f} ({m.avg:.4f})" for k, m in meters.items())
            logger.info(f"Train: [{epoch}/{cfg.train.epochs}][{idx}/{num_steps}]  eta {eta}  lr {lr:.4e}  "
                        f"time {batch_time.val:.4f} ({batch_time.avg:.4f})  {losses_text}  "
                        f"grad_norm {norm_meter.val:.4f} ({norm_meter.avg:.4f}){memory}")
            if state.reporter is not None:
                scalars = {f"iter/{k}": m.val for k, m in meters.items()}
                state.reporter.scalars({**scalars, "iter/lr": lr, "iter/grad_norm": norm_meter.val}, iteration)
    counts = loader.counts
    logger.info(f"EPOCH {epoch} training takes {datetime.timedelta(seconds=int(time.time() - start))}; skipped: "
                f"{counts.skipped} bad samples of {counts.read} read, {guard.in_epoch} non-finite steps")
    return {name: m.avg for name, m in meters.items()}


def run_epochs(state: RunState) -> History:
    """Epochs ``state.start_epoch`` .. ``train.epochs - 1``: train, evaluate every ``evaluate.eval_freq`` epochs (and
    the last), save checkpoints every ``checkpoint.save_freq`` epochs (the last, and a new best), report."""
    cfg, logger, history = state.cfg, state.logger, state.history
    metrics = history.best
    try:
        for epoch in range(state.start_epoch, cfg.train.epochs):
            interrupt.now_doing(f"training epoch {epoch} (of {state.start_epoch}-{cfg.train.epochs - 1})")
            losses = train_one_epoch(state, epoch)
            results, best = {}, []
            if epoch % cfg.evaluate.eval_freq == 0 or epoch == cfg.train.epochs - 1:
                interrupt.now_doing(f"evaluating after epoch {epoch}")
                results, best, state.run_seg = evaluate_epoch(cfg, state.model, state.val_loader, state.run_seg,
                                                              metrics, state.precision, state.device, logger)
            if epoch % cfg.checkpoint.save_freq == 0 or epoch == cfg.train.epochs - 1 or best:
                saved = Path(cfg.output) / f"ckpt_epoch_{epoch}.pth"
                interrupt.now_doing(f"saving the checkpoint of epoch {epoch}")
                if get_rank() == 0:
                    ckpt = training_state(state.model, state.optimizer, state.scheduler, state.scaler, epoch, metrics,
                                          cfg)
                    save_epoch_checkpoint(cfg.output, ckpt, cfg.checkpoint.max_kept, best)
                    logger.info(f"saved {saved}" + "".join(f" (best {m})" for m in best))
                state.guard.last_checkpoint = str(saved)
                interrupt.progress.resume = interrupt.checkpoint_hint(saved, cfg.checkpoint.auto_resume)
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
