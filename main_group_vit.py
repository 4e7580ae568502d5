"""GroupViT pretraining, and zero-shot ImageNet classification with ``--eval``.

    python main_group_vit.py --cfg configs/group_vit_gcc_yfcc_30e.yml                       # one process
    torchrun --nproc_per_node 8 main_group_vit.py --cfg configs/group_vit_gcc_yfcc_30e.yml  # one node
    python main_group_vit.py --cfg CONFIG --resume CHECKPOINT --eval                        # zero-shot ImageNet

Runs on CPU or CUDA, as a plain process or under torchrun (NCCL on GPUs, gloo on CPUs). See utils/training.py
for the loop's pieces and datasets/builder.py for the data.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from datasets.builder import build_train_loader, build_val_loader
from models import build_model
from utils.checkpoint import auto_resume_helper, load_checkpoint, load_model_state, remove_partial_saves
from utils.cli import add_debug_flag, make_output_dir, run_cli
from utils.config import get_config
from utils.distributed import get_rank, get_world_size, init_distributed, is_dist
from utils.errors import UserError
from utils.logger import get_logger
from utils.lr_scheduler import build_scheduler
from utils.optimizer import build_optimizer
from utils.training import (
    NonFiniteGuard,
    Reporter,
    resolve_precision,
    resume_training,
    save_epoch_checkpoint,
    scale_learning_rates,
    set_random_seed,
    train_one_epoch,
    training_state,
    validate_cls,
    validate_epoch,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser("GroupViT training and zero-shot evaluation")
    parser.add_argument("--cfg", required=True, metavar="FILE", help="path to the config file")
    parser.add_argument("--opts", nargs="+", help="config overrides: key=value (or key value) pairs")
    parser.add_argument("--batch-size", type=int, help="batch size per process (data.batch_size)")
    parser.add_argument("--resume", help="checkpoint (path or URL) to resume from or to evaluate")
    parser.add_argument("--amp-opt-level", choices=["O0", "O1", "O2"],
                        help="train.amp_opt_level: O0 = float32; O1/O2 = float16 autocast with a grad scaler on "
                             "CUDA (float32 on CPU); train.amp=bf16|fp16|fp32 overrides it")
    parser.add_argument("--output", metavar="PATH", help="output folder (default output/<model_name>)")
    parser.add_argument("--tag", help="run tag, appended to the output folder")
    parser.add_argument("--eval", action="store_true", help="only evaluate zero-shot ImageNet classification")
    parser.add_argument("--wandb", action="store_true", help="log to Weights & Biases")
    parser.add_argument("--keep", type=int, help="number of epoch checkpoints to keep (checkpoint.max_kept)")
    parser.add_argument("--local_rank", "--local-rank", type=int, help="set by torch.distributed.launch; optional")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    cfg = get_config(args)
    owns_group = not is_dist()
    device = init_distributed()
    try:
        scale_learning_rates(cfg, get_world_size())
        set_random_seed(cfg.seed + get_rank())
        torch.backends.cudnn.benchmark = device.type == "cuda"
        make_output_dir(cfg.output)
        logger = get_logger(cfg.output)
        logger.info(f"{'evaluating' if cfg.evaluate.eval_only else 'training'} {cfg.model_name} on {device} "
                    f"(world size {get_world_size()}); full config in {Path(cfg.output) / 'config.yml'}")
        return evaluate(cfg, device, logger) if cfg.evaluate.eval_only else train(cfg, device, logger)
    finally:
        if owns_group and is_dist():
            dist.destroy_process_group()


def save_run_config(cfg: DictConfig) -> None:
    """``<output>/config.yml``: the resolved run config (rank 0), written once the run's inputs have loaded."""
    if get_rank() == 0:
        container = OmegaConf.to_container(cfg, resolve=True)
        container.pop("_base_", None)  # the saved file stands alone
        OmegaConf.save(OmegaConf.create(container), Path(cfg.output) / "config.yml")


def evaluate(cfg: DictConfig, device: torch.device, logger: logging.Logger) -> dict[str, float]:
    """--eval: zero-shot ImageNet top-1/top-5 of the checkpoint; no training shard is needed."""
    resume = cfg.checkpoint.resume or (cfg.checkpoint.auto_resume and auto_resume_helper(cfg.output))
    if not resume:
        raise UserError("--eval needs weights: give --resume CHECKPOINT (a path or URL)")
    pin = cfg.data.pin_memory and device.type == "cuda"
    loader = build_val_loader(cfg.data, get_rank(), get_world_size(), pin_memory=pin)
    model = build_model(cfg.model).to(device)
    load_model_state(model, load_checkpoint(resume)["model"])
    save_run_config(cfg)
    precision = resolve_precision(cfg.train, device)
    metrics = validate_cls(cfg, model, loader, precision, device)
    logger.info(f"Accuracy of {resume} on the {metrics['num_images']} test images: top-1 {metrics['acc1']:.2f}%  "
                f"top-5 {metrics['acc5']:.2f}%  ({precision.name})")
    return metrics


def train(cfg: DictConfig, device: torch.device, logger: logging.Logger) -> dict[str, float]:
    rank, world_size = get_rank(), get_world_size()
    guard = NonFiniteGuard(cfg.train.max_nonfinite_steps)
    pin = cfg.data.pin_memory and device.type == "cuda"
    train_loader = build_train_loader(cfg.data, rank, world_size, pin_memory=pin)
    val_loader = None
    if "cls" in cfg.evaluate.task:
        val_loader = build_val_loader(cfg.data, rank, world_size, pin_memory=pin, missing_ok=True)
        if val_loader is None:
            logger.info("zero-shot classification skipped: no validation shards (data.dataset.val)")
    run_seg = "seg" in cfg.evaluate.task

    model = build_model(cfg.model).to(device)
    if world_size > 1 and device.type == "cuda":  # the reference's SyncBatchNorm projectors (CUDA only)
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    logger.info(f"model: {sum(p.numel() for p in model.parameters()):,} parameters")
    optimizer = build_optimizer(cfg.train, model)
    precision = resolve_precision(cfg.train, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)
    scheduler = build_scheduler(cfg.train, optimizer, len(train_loader))
    if world_size > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                        broadcast_buffers=False)
    logger.info(f"precision {precision.name}; {len(train_loader)} iterations per epoch; lr {cfg.train.base_lr:.3g} "
                f"(warmup {cfg.train.warmup_lr:.3g}, min {cfg.train.min_lr:.3g})")

    if rank == 0 and (partial := remove_partial_saves(cfg.output)):
        logger.info(f"removed {len(partial)} incomplete checkpoint file(s) of an interrupted run, e.g. {partial[0]}")
    resume = cfg.checkpoint.resume
    if cfg.checkpoint.auto_resume and (found := auto_resume_helper(cfg.output)):
        if resume and resume != found:
            logger.warning(f"auto-resume: using {found} instead of {resume}")
        resume = found
    start_epoch, metrics = cfg.train.start_epoch, {"max_accuracy": 0.0, "max_miou": 0.0}
    if resume:
        start_epoch, metrics = resume_training(resume, model, optimizer, scheduler, scaler, logger)
        guard.last_checkpoint = resume
    train_loader.set_first_epoch(start_epoch)
    save_run_config(cfg)

    reporter = Reporter(cfg, logger) if rank == 0 else None
    try:
        for epoch in range(start_epoch, cfg.train.epochs):
            train_one_epoch(cfg, model, train_loader, optimizer, scheduler, scaler, precision, epoch, device, logger,
                            guard, reporter)
            results, best = {}, []
            if epoch % cfg.evaluate.eval_freq == 0 or epoch == cfg.train.epochs - 1:
                results, best, run_seg = validate_epoch(cfg, model, val_loader, run_seg, metrics, precision, device,
                                                        logger)
            if epoch % cfg.checkpoint.save_freq == 0 or epoch == cfg.train.epochs - 1 or best:
                saved = Path(cfg.output) / f"ckpt_epoch_{epoch}.pth"
                if rank == 0:
                    state = training_state(model, optimizer, scheduler, scaler, epoch, metrics, cfg)
                    save_epoch_checkpoint(cfg.output, state, cfg.checkpoint.max_kept, best)
                    logger.info(f"saved {saved}" + "".join(f" (best {m})" for m in best))
                guard.last_checkpoint = str(saved)
            if rank == 0:
                scalars = {f"epoch/{k}": v for k, v in {**results, **metrics}.items() if k != "num_images"}
                reporter.scalars(scalars, epoch)
            logger.info(f"epoch {epoch}: max accuracy {metrics['max_accuracy']:.2f}%, "
                        f"max mIoU {metrics['max_miou']:.2f}")
    except UserError as e:  # e.g. too many bad samples or non-finite steps: the log says why the run stopped
        logger.error(str(e))
        raise
    finally:
        if reporter is not None:
            reporter.close()
    return metrics


if __name__ == "__main__":
    run_cli(main)
