"""Pieces of the pretraining loop (spec 6): precision, LR scaling, the training step and epoch, zero-shot
classification, the optional segmentation check, checkpoints of the training state, and metric reporting.

``main_group_vit.py`` strings these together; ``benchmarks/train_throughput.py`` reuses ``train_step``.

Reliability: every epoch reseeds the RNGs from (seed, rank, epoch) and the loader restarts its stream from the
epoch's seeds, so an epoch's losses depend only on the weights and optimizer state it starts from: a run resumed
from a checkpoint repeats an uninterrupted run exactly (on the same hardware and settings). A step with a non-finite
loss or gradient norm leaves the weights alone and is counted (``NonFiniteGuard``).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import random
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, read_write
from timm.utils import AverageMeter
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from utils.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from utils.distributed import all_reduce_sum, get_rank, get_world_size, is_dist
from utils.errors import UserError

if TYPE_CHECKING:
    from datasets.builder import EpochLoader

AMP_CHOICES = ("auto", "fp32", "fp16", "bf16")
_EPOCH_FILE = re.compile(r"^ckpt_epoch_(\d+)\.pth$")


# --------------------------------------------------------------------------------------------- setup


@dataclass(frozen=True)
class Precision:
    """Mixed precision of a run: the autocast dtype (None = float32) and whether a GradScaler is used."""

    name: str
    dtype: torch.dtype | None
    use_scaler: bool

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None)


def resolve_precision(train_cfg: DictConfig, device: torch.device) -> Precision:
    """``train.amp`` (auto | fp32 | fp16 | bf16) for ``device``.

    'auto' follows ``train.amp_opt_level``: O0 is float32; O1 and O2 (apex's levels) become float16 autocast
    with a dynamic loss scaler on CUDA, and float32 on the CPU. bf16 autocasts without a scaler on either device.
    """
    amp = train_cfg.get("amp", "auto")
    if amp not in AMP_CHOICES:
        raise UserError(f"train.amp must be one of {', '.join(AMP_CHOICES)}, not {amp!r}")
    if amp == "auto":
        level = train_cfg.amp_opt_level
        if level not in ("O0", "O1", "O2"):
            raise UserError(f"train.amp_opt_level must be O0, O1 or O2, not {level!r}")
        amp = "fp16" if level != "O0" and device.type == "cuda" else "fp32"
    if amp == "fp16" and device.type != "cuda":
        raise UserError("train.amp=fp16 needs CUDA; use bf16 or fp32 on the CPU")
    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]
    return Precision(amp, dtype, use_scaler=amp == "fp16")


def scale_learning_rates(cfg: DictConfig, world_size: int) -> None:
    """Linear scaling to the global batch: lr * batch_size * world_size / 4096, for base, warmup and min lr,
    times ``accumulation_steps`` when it is > 1 (in place)."""
    factor = cfg.data.batch_size * world_size / 4096.0
    if cfg.train.accumulation_steps > 1:
        factor *= cfg.train.accumulation_steps
    with read_write(cfg):
        for key in ("base_lr", "warmup_lr", "min_lr"):
            cfg.train[key] = cfg.train[key] * factor


def set_random_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_seed(seed: int, rank: int, world_size: int, epoch: int) -> int:
    """The seed of one process's epoch: distinct for every (rank, epoch) and from the start seeds ``seed + rank``."""
    return seed + rank + (epoch + 1) * world_size


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def load_classnames(cls_cfg: DictConfig) -> list[str]:
    """``evaluate.cls.classnames``: None -> the 1000 ImageNet names; a list; or a file with one name per line."""
    names = cls_cfg.get("classnames")
    if names is None:
        from datasets import imagenet_classes

        return list(imagenet_classes)
    if isinstance(names, str):
        path = Path(names)
        if not path.is_file():
            raise UserError(f"evaluate.cls.classnames: file not found: {names}")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [str(name) for name in names]


# --------------------------------------------------------------------------------------------- training


def _finite_everywhere(value: torch.Tensor) -> bool:
    """Whether ``value`` is finite in every process (an all-reduce under torch.distributed, so that all agree)."""
    bad = (~torch.isfinite(value.detach())).any().float().reshape(1)
    return not (all_reduce_sum(bad) if is_dist() else bad).item()


def train_step(model: nn.Module, batch: Mapping[str, torch.Tensor], optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, precision: Precision, clip_grad: float | None,
               accumulation: int = 1, step: bool = True) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Forward, backward and (when ``step``) clip + optimizer step; returns the losses and the pre-clip grad norm.

    The total loss is the sum of every output whose name contains 'loss', divided by ``accumulation`` for the
    backward. Without ``step`` the gradients accumulate (and DDP does not synchronise them) and the norm is None.

    Non-finite values never reach the model: a loss that is non-finite (in any process) gets no backward, the
    buffers its forward updated (BatchNorm statistics) are restored, and when its call should step, the step is
    skipped and the accumulated gradients are dropped; a non-finite gradient norm skips the step too. A step skipped
    so returns None as its norm. (With the fp16 grad scaler, a non-finite norm is its routine overflow: the scaler
    skips that step itself and lowers its scale, and the norm is returned as measured.)
    """
    device = next(unwrap(model).parameters()).device
    buffers = [(b, b.clone()) for b in unwrap(model).buffers()]
    sync = step or not isinstance(model, DistributedDataParallel)
    with contextlib.nullcontext() if sync else model.no_sync():
        with precision.autocast(device):
            losses = model(**batch)
        total = sum(v for k, v in losses.items() if "loss" in k)
        finite = _finite_everywhere(total)
        if finite:
            scaler.scale(total / accumulation).backward()
        else:
            with torch.no_grad():
                for buffer, before in buffers:
                    buffer.copy_(before)
    losses = {"total_loss": total.detach(), **{k: v.detach() for k, v in losses.items()}}
    if not step:
        return losses, None
    grad_norm = None
    if finite:
        scaler.unscale_(optimizer)
        max_norm = clip_grad if clip_grad else float("inf")  # inf: measure the norm without clipping
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        if scaler.is_enabled() or torch.isfinite(grad_norm):
            scaler.step(optimizer)
        else:
            grad_norm = None
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return losses, grad_norm


class NonFiniteGuard:
    """Counts the iterations whose loss or gradient norm was non-finite (their steps were skipped); ``limit`` in a
    row (0: no limit) stop the run with a UserError naming the iteration and ``last_checkpoint``."""

    def __init__(self, limit: int, last_checkpoint: str | None = None):
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise UserError(f"train.max_nonfinite_steps must be a whole number >= 0, not {limit!r}")
        self.limit = limit
        self.last_checkpoint = last_checkpoint  # the newest complete checkpoint of the run, for the stop message
        self.in_a_row = 0
        self.in_epoch = 0

    def start_epoch(self) -> None:
        self.in_epoch = 0

    def update(self, finite: bool, iteration: int, where: str) -> None:
        """Record one iteration (``where``: e.g. 'epoch 1, step 3/10')."""
        if finite:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        self.in_epoch += 1
        if self.limit and self.in_a_row >= self.limit:
            last = f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint else \
                "no checkpoint was saved yet"
            raise UserError(f"training stopped at iteration {iteration} ({where}): {self.in_a_row} non-finite losses "
                            f"or gradient norms in a row (train.max_nonfinite_steps={self.limit}); {last}")


def train_one_epoch(cfg: DictConfig, model: nn.Module, loader: EpochLoader, optimizer: torch.optim.Optimizer,
                    scheduler: Any, scaler: torch.amp.GradScaler, precision: Precision, epoch: int,
                    device: torch.device, logger: logging.Logger, guard: NonFiniteGuard,
                    reporter: Reporter | None = None) -> dict[str, float]:
    """One epoch of ``len(loader)`` iterations; the scheduler is stepped per optimizer step, after it.

    The RNGs are reseeded from (``cfg.seed``, rank, epoch) first. Iterations with a non-finite loss or gradient norm
    are logged, left out of the averages and counted by ``guard``; the epoch's last log line counts them and the
    bad samples the loader skipped.
    """
    set_random_seed(epoch_seed(cfg.seed, get_rank(), get_world_size(), epoch))
    model.train()
    num_steps = len(loader)
    accumulation = max(1, cfg.train.accumulation_steps)
    meters: dict[str, AverageMeter] = {}
    batch_time, norm_meter = AverageMeter(), AverageMeter()
    guard.start_epoch()
    optimizer.zero_grad(set_to_none=True)
    start = end = time.time()
    for idx, batch in enumerate(loader):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        step = (idx + 1) % accumulation == 0
        lr = optimizer.param_groups[0]["lr"]  # the rate this step runs with
        losses, grad_norm = train_step(model, batch, optimizer, scaler, precision, cfg.train.clip_grad,
                                       accumulation, step)
        if step:
            scheduler.step_update(epoch * num_steps + idx)
        finite = bool(torch.isfinite(losses["total_loss"])) and not (step and grad_norm is None)
        if not finite:
            logger.warning(f"Train: [{epoch}/{cfg.train.epochs}][{idx}/{num_steps}]  non-finite loss "
                           f"({losses['total_loss'].item():.4g}) or gradient norm: optimizer step skipped "
                           f"({guard.in_a_row + 1} in a row)")
        guard.update(finite, epoch * num_steps + idx, f"epoch {epoch}, step {idx}/{num_steps}")
        batch_time.update(time.time() - end)
        end = time.time()
        if not finite:
            continue
        for name, value in losses.items():
            meters.setdefault(name, AverageMeter()).update(value.item(), batch["image"].shape[0])
        if grad_norm is not None and torch.isfinite(grad_norm):  # (the fp16 grad scaler's overflows are not)
            norm_meter.update(grad_norm.item())
        if idx % cfg.print_freq == 0 or idx == num_steps - 1:
            eta = datetime.timedelta(seconds=int(batch_time.avg * (num_steps - idx - 1)))
            memory = f"  mem {torch.cuda.max_memory_allocated() / 2**20:.0f}MB" if device.type == "cuda" else ""
            losses_text = "  ".join(f"{k} {m.val:.4f} ({m.avg:.4f})" for k, m in meters.items())
            logger.info(f"Train: [{epoch}/{cfg.train.epochs}][{idx}/{num_steps}]  eta {eta}  lr {lr:.4e}  "
                        f"time {batch_time.val:.4f} ({batch_time.avg:.4f})  {losses_text}  "
                        f"grad_norm {norm_meter.val:.4f} ({norm_meter.avg:.4f}){memory}")
            if reporter is not None:
                scalars = {f"iter/{k}": m.val for k, m in meters.items()}
                reporter.scalars({**scalars, "iter/lr": lr, "iter/grad_norm": norm_meter.val}, epoch * num_steps + idx)
    counts = loader.counts
    logger.info(f"EPOCH {epoch} training takes {datetime.timedelta(seconds=int(time.time() - start))}; skipped: "
                f"{counts.skipped} bad samples of {counts.read} read, {guard.in_epoch} non-finite steps")
    return {name: m.avg for name, m in meters.items()}


# --------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def validate_cls(cfg: DictConfig, model: nn.Module, loader: Iterable, precision: Precision,
                 device: torch.device) -> dict[str, float]:
    """Zero-shot classification over every image of ``loader`` (all ranks together): top-1/top-5 in percent.

    Class embeddings: each class name in each ``evaluate.cls.template`` prompt, encoded, averaged over
    prompts, then L2-normalised (spec 3.8); logits are the images' cosine similarities to them.
    """
    from datasets import Tokenize, build_dataset_class_tokens

    model = unwrap(model)
    was_training = model.training
    model.eval()
    classnames = load_classnames(cfg.evaluate.cls)
    tokens = build_dataset_class_tokens(Tokenize(max_seq_len=cfg.data.text_aug.max_seq_len),
                                        cfg.evaluate.cls.template, classnames)  # [N, T, 77]
    with precision.autocast(device):
        text_emb = torch.cat([model.build_text_embedding(chunk.to(device)) for chunk in tokens.split(100)])  # [N, E]
    k = min(5, len(classnames))
    counts = torch.zeros(3, dtype=torch.long, device=device)  # top-1 hits, top-k hits, images
    for batch in loader:
        image, target = batch["image"].to(device, non_blocking=True), batch["target"].to(device)
        if int(target.max()) >= len(classnames):
            raise UserError(f"validation label {int(target.max())} but only {len(classnames)} class names "
                            "(evaluate.cls.classnames)")
        with precision.autocast(device):
            logits = model.zero_shot_pred(image, text_emb)  # [B, N]
        hits = logits.float().topk(k, dim=1).indices == target[:, None]  # [B, k]
        counts += torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum(), counts.new_tensor(len(target))])
    all_reduce_sum(counts)
    model.train(was_training)
    top1, topk, total = counts.tolist()
    if total == 0:
        raise UserError("zero-shot classification: no validation image could be read")
    return {"acc1": 100.0 * top1 / total, "acc5": 100.0 * topk / total, "num_images": total}


def try_validate_seg(cfg: DictConfig, model: nn.Module, logger: logging.Logger) -> float | None:
    """mIoU (x100) from the segmentation evaluator; None (with one log line) when it or its dataset is missing."""
    try:
        from segmentation.evaluation import validate_seg
    except ImportError as e:
        logger.info(f"zero-shot segmentation skipped: the evaluator is not available ({e})")
        return None
    model = unwrap(model)
    was_training = model.training
    try:
        return float(validate_seg(cfg, model.eval(), logger=logger))
    except UserError as e:
        logger.info(f"zero-shot segmentation skipped: {e}")
        return None
    finally:
        model.train(was_training)


def validate_epoch(cfg: DictConfig, model: nn.Module, cls_loader: Iterable | None, run_seg: bool,
                   metrics: dict[str, float], precision: Precision, device: torch.device,
                   logger: logging.Logger) -> tuple[dict[str, float], list[str], bool]:
    """The per-epoch evaluation: zero-shot classification when ``cls_loader`` exists, segmentation when ``run_seg``.

    Updates the best ``metrics`` ('max_accuracy', 'max_miou') in place. Returns this epoch's results, the metrics
    that improved and have ``save_best`` ('acc1', 'miou'), and whether segmentation should run next time (not
    after it was skipped).
    """
    results, best = {}, []
    if cls_loader is not None:
        results.update(validate_cls(cfg, model, cls_loader, precision, device))
        logger.info(f"Accuracy on the {results['num_images']} test images: top-1 {results['acc1']:.2f}% "
                    f"top-5 {results['acc5']:.2f}%")
        if results["acc1"] > metrics["max_accuracy"] and cfg.evaluate.cls.save_best:
            best.append("acc1")
        metrics["max_accuracy"] = max(metrics["max_accuracy"], results["acc1"])
    if run_seg:
        miou = try_validate_seg(cfg, model, logger)
        if miou is None:
            return results, best, False
        results["miou"] = miou
        logger.info(f"mIoU {miou:.2f}")
        if miou > metrics["max_miou"] and cfg.evaluate.seg.save_best:
            best.append("miou")
        metrics["max_miou"] = max(metrics["max_miou"], miou)
    return results, best, run_seg


# --------------------------------------------------------------------------------------------- checkpoints


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler,
                   epoch: int, metrics: Mapping[str, float], cfg: DictConfig) -> dict[str, Any]:
    """The reference's checkpoint layout (plus the grad scaler), with the config as plain data."""
    state = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "metrics": dict(metrics),
        "epoch": epoch,
        "config": OmegaConf.to_container(cfg, resolve=True),
        **metrics,
    }
    if scaler.is_enabled():
        state["scaler"] = scaler.state_dict()
    return state


def save_epoch_checkpoint(output: str, state: Mapping[str, Any], max_kept: int, best: Iterable[str] = ()) -> None:
    """Write ``ckpt_epoch_N.pth`` and ``checkpoint.pth``; for each metric in ``best`` (e.g. 'acc1') also
    ``ckpt_epoch_N_best_<metric>.pth``, replacing the previous best copy. ``max_kept`` > 0 keeps only that many
    ``ckpt_epoch_N.pth`` files (best copies and checkpoint.pth are never pruned)."""
    folder, epoch = Path(output), state["epoch"]
    save_checkpoint(state, folder / f"ckpt_epoch_{epoch}.pth")
    save_checkpoint(state, folder / "checkpoint.pth")
    for metric in best:
        path = folder / f"ckpt_epoch_{epoch}_best_{metric}.pth"
        save_checkpoint(state, path)
        for old in folder.glob(f"ckpt_epoch_*_best_{metric}.pth"):
            if old != path:
                old.unlink()
    if max_kept > 0:
        epochs = sorted((int(m[1]), p) for p in folder.iterdir() if (m := _EPOCH_FILE.match(p.name)))
        for _, path in epochs[:-max_kept]:
            path.unlink()


def resume_training(path: str, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    scaler: torch.amp.GradScaler, logger: logging.Logger) -> tuple[int, dict[str, float]]:
    """Load a checkpoint into the run; returns (first epoch to train, best metrics so far).

    The model is always loaded (strictly). Optimizer, scheduler, grad scaler and epoch are restored when the
    file has them (our training checkpoints); a weights-only file (e.g. a released model) starts at epoch 0.
    """
    ckpt = load_checkpoint(path)
    load_model_state(unwrap(model), ckpt["model"])
    metrics = {"max_accuracy": 0.0, "max_miou": 0.0, **{k: float(v) for k, v in ckpt.get("metrics", {}).items()}}
    if not all(key in ckpt for key in ("optimizer", "lr_scheduler", "epoch")):
        logger.info(f"loaded the model weights of {path} (no training state in it): training starts at epoch 0")
        return 0, metrics
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["lr_scheduler"])
    if scaler.is_enabled() and "scaler" in ckpt:
        scaler.load_state_dict(ckpt["scaler"])
    logger.info(f"resumed from {path} (epoch {ckpt['epoch']}; max accuracy {metrics['max_accuracy']:.2f}, "
                f"max mIoU {metrics['max_miou']:.2f})")
    return int(ckpt["epoch"]) + 1, metrics


# --------------------------------------------------------------------------------------------- reporting


class Reporter:
    """Scalars to TensorBoard (``<output>/tensorboard``) and, with ``--wandb``, to Weights & Biases (rank 0)."""

    def __init__(self, cfg: DictConfig, logger: logging.Logger):
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(Path(cfg.output) / "tensorboard"))
        except ImportError as e:
            logger.info(f"TensorBoard logging off ({e})")
        self.wandb = None
        if cfg.wandb:
            try:
                import wandb
            except ImportError:
                raise UserError("--wandb needs the wandb package (pip install wandb)") from None
            self.wandb = wandb.init(project="group_vit", name=f"{cfg.model_name}/{cfg.tag}", dir=cfg.output,
                                    config=OmegaConf.to_container(cfg, resolve=True),
                                    resume="allow" if cfg.checkpoint.auto_resume else None)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)
        if self.wandb is not None:  # no step: W&B needs it monotonic across iteration and epoch logs
            self.wandb.log(dict(values))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()
