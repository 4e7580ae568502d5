"""The two verbs of ``main_group_vit.py``: ``train(cfg)`` (build the run from the config, then its epochs; returns
the ``History``) and ``evaluate(cfg)`` (zero-shot classification of a checkpoint)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from datasets.builder import build_train_loader, build_val_loader
from models import build_model
from segmentation.model_loading import load_eval_state, with_model_config
from training.checkpointing import (
    ResumePoint,
    batch_of,
    check_not_another_run,
    note_saved,
    resume_training,
    save_run_config,
)
from training.loop import build_step, run_epochs
from training.precision import resolve_precision
from training.reporting import Reporter
from training.rng import set_random_seed
from training.state import History, RunState
from training.step import NonFiniteGuard, check_model, compile_forward
from training.zero_shot_cls import evaluate_cls
from utils import interrupt
from utils.checkpoint import auto_resume_helper, load_checkpoint, remove_partial_saves
from utils.cli import make_output_dir
from utils.config_schema import check_config
from utils.distributed import get_rank, get_world_size, init_distributed
from utils.errors import UserError
from utils.logger import get_logger
from utils.lr_scheduler import build_scheduler
from utils.optimizer import build_optimizer
from utils.run_lock import hold_run_lock


def scaled_train_config(cfg: DictConfig, world_size: int) -> DictConfig:
    """``cfg.train`` with base, warmup and min lr scaled linearly to the effective batch, as the reference's
    main_group_vit.py does: lr * batch_size * world_size * accumulation_steps / 4096. A copy: the run's config
    (and so its saved ``config.yml``) keeps the rates as written, and a rerun from it scales them once, to the
    same values."""
    factor = cfg.data.batch_size * world_size * max(1, cfg.train.accumulation_steps) / 4096.0
    scaled = {key: cfg.train[key] * factor for key in ("base_lr", "warmup_lr", "min_lr")}
    return OmegaConf.merge(cfg.train, scaled)


def start_run(cfg: DictConfig, device: torch.device | None, logger: logging.Logger | None,
              ) -> tuple[torch.device, logging.Logger]:
    """What both verbs do first: join the process group (if torchrun describes one), scale the learning rates,
    seed, create the output folder and its logger."""
    device = device or init_distributed()
    set_random_seed(cfg.seed + get_rank())
    torch.backends.cudnn.benchmark = device.type == "cuda"
    make_output_dir(cfg.output)
    logger = logger or get_logger(cfg.output)
    logger.info(f"{'evaluating' if cfg.evaluate.eval_only else 'training'} {cfg.model_name} on {device} "
                f"(world size {get_world_size()}); full config in {Path(cfg.output) / 'config.yml'}")
    return device, logger


def evaluate(cfg: DictConfig, device: torch.device | None = None,
             logger: logging.Logger | None = None) -> dict[str, float]:
    """Zero-shot ImageNet top-1/top-5 of the checkpoint ``checkpoint.resume`` (or the output folder's newest);
    no training shard is needed. Writes ``config.yml`` after the evaluation, unless the folder has one (a training
    run's, which stays as it was)."""
    check_config(cfg, "the run config")  # it may not come from get_config
    device = device or init_distributed()
    with hold_run_lock(cfg.output, device):
        device, logger = start_run(cfg, device, logger)
        resume = cfg.checkpoint.resume or (cfg.checkpoint.auto_resume and auto_resume_helper(cfg.output))
        if not resume:
            raise UserError("--eval needs weights: give --resume CHECKPOINT (a path or URL)")
        interrupt.now_doing(f"evaluating {resume}")
        interrupt.progress.resume = "rerun the command to evaluate again"
        pin = cfg.data.pin_memory and device.type == "cuda"
        loader = build_val_loader(cfg.data, get_rank(), get_world_size(), pin_memory=pin)
        ckpt = load_checkpoint(resume)  # a .pth, a transformers folder or a Hub id
        cfg = with_model_config(cfg, ckpt)  # without a model section in --cfg: the checkpoint's
        model = build_model(cfg.model).to(device)
        load_eval_state(model, ckpt["model"])
        precision = resolve_precision(cfg.train, device)
        metrics = evaluate_cls(cfg, model, loader, precision, device)
        logger.info(f"Accuracy of {resume} on the {metrics['num_images']} test images: top-1 {metrics['acc1']:.2f}%"
                    f"  top-5 {metrics['acc5']:.2f}%  ({precision.name})")
        if not (Path(cfg.output) / "config.yml").exists():  # one there is the training run's: kept
            save_run_config(cfg)
        return metrics


def build_run(cfg: DictConfig, device: torch.device, logger: logging.Logger) -> RunState:
    """Loaders, model (DDP with several processes), optimizer, schedule, grad scaler; resumed from
    ``checkpoint.resume`` or, with ``checkpoint.auto_resume``, from the output folder's newest checkpoint."""
    rank, world_size = get_rank(), get_world_size()
    check_not_another_run(cfg)
    guard = NonFiniteGuard(cfg.train.max_nonfinite_steps)
    pin = cfg.data.pin_memory and device.type == "cuda"
    train_loader = build_train_loader(cfg.data, rank, world_size, pin_memory=pin)
    val_loader = None
    if "cls" in cfg.evaluate.task:
        val_loader = build_val_loader(cfg.data, rank, world_size, pin_memory=pin, missing_ok=True)
        if val_loader is None:
            logger.info("zero-shot classification skipped: no validation shards (data.dataset.val)")

    model = build_model(cfg.model).to(device)
    check_model(model, cfg.train.accumulation_steps)
    if world_size > 1 and device.type == "cuda":  # the reference's SyncBatchNorm projectors (CUDA only)
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    logger.info(f"model: {sum(p.numel() for p in model.parameters()):,} parameters")
    if cfg.train.compile:
        compile_forward(model, cfg.train.text_length_multiple)
    train_cfg = scaled_train_config(cfg, world_size)
    optimizer = build_optimizer(train_cfg, model)
    precision = resolve_precision(cfg.train, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)
    scheduler = build_scheduler(train_cfg, optimizer, len(train_loader))
    if world_size > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                        broadcast_buffers=False)
    accumulation = max(1, cfg.train.accumulation_steps)
    if accumulation > len(train_loader):
        raise UserError(f"train.accumulation_steps {accumulation} is more than the {len(train_loader)} iterations of "
                        "an epoch: no optimizer step would ever be made; lower it (or data.batch_size)")
    steps = f"; {accumulation} iterations (micro-batches) per optimizer step" if accumulation > 1 else ""
    logger.info(f"precision {precision.name}; {len(train_loader)} iterations per epoch{steps}; lr "
                f"{train_cfg.base_lr:.3g} (warmup {train_cfg.warmup_lr:.3g}, min {train_cfg.min_lr:.3g}; "
                f"scaled to the batch of {cfg.data.batch_size * world_size * accumulation})")
    if len(train_loader) % accumulation:
        logger.warning(f"the last {len(train_loader) % accumulation} iterations of each epoch do not fill an "
                       f"optimizer step of {accumulation} and are not trained on")

    if rank == 0 and (partial := remove_partial_saves(cfg.output)):
        logger.info(f"removed {len(partial)} incomplete checkpoint file(s) of an interrupted run, e.g. {partial[0]}")
    resume = cfg.checkpoint.resume
    if cfg.checkpoint.auto_resume and (found := auto_resume_helper(cfg.output)):
        if resume and resume != found:
            logger.warning(f"auto-resume: using {found} instead of {resume}")
        resume = found
    point = resume_training(resume, model, optimizer, scheduler, scaler, logger, batch_of(cfg, world_size)) \
        if resume else ResumePoint(epoch=cfg.train.start_epoch)
    train_loader.set_first_epoch(point.epoch)
    state = RunState(cfg=cfg, model=model, step=build_step(cfg, model, optimizer, scaler, precision),
                     optimizer=optimizer, scheduler=scheduler, scaler=scaler, precision=precision, device=device,
                     logger=logger, guard=guard, progress=interrupt.progress, train_loader=train_loader,
                     val_loader=val_loader, run_seg="seg" in cfg.evaluate.task, start_epoch=point.epoch,
                     resume_iteration=point.iteration, resume_rng=point.rng, history=History(best=point.metrics))
    if resume:
        note_saved(state, resume)
    return state


def train(cfg: DictConfig, device: torch.device | None = None, logger: logging.Logger | None = None) -> History:
    """Pretrain as ``cfg`` says (a run config as ``utils.config.get_config`` makes it: ``output`` set); returns the
    history (per-iteration losses, per-epoch metrics, best metrics). ``device``: default the process's (CUDA when
    visible, joining torchrun's process group); ``logger``: default ``<output>/log.txt`` and the console."""
    check_config(cfg, "the run config")  # it may not come from get_config
    device = device or init_distributed()
    with hold_run_lock(cfg.output, device):  # one run per output folder
        interrupt.now_doing("setting up the run (data loaders, model, optimizer)")
        interrupt.progress.resume = "no checkpoint was saved yet"
        device, logger = start_run(cfg, device, logger)
        state = build_run(cfg, device, logger)
        state.reporter = Reporter(cfg, logger) if get_rank() == 0 else None
        return run_epochs(state)
