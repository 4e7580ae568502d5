"""Training throughput: images/s and peak memory of full training steps (forward, backward, clip, AdamW).

    python benchmarks/train_throughput.py --cfg configs/group_vit_gcc_yfcc_30e.yml --device cuda \\
        --precision fp32 fp16 bf16 --batch-size 128 --iters 20

Inputs are random images and random caption tokens ([B, 1 + multi_label, 77] when the config uses the
multi-label loss), so the data pipeline is not measured. One process, no DDP. Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA and the process's peak resident set size on the CPU.
Prints one table row per precision.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not a package

from models import build_model  # noqa: E402
from training.precision import Precision, resolve_precision  # noqa: E402
from training.step import train_step  # noqa: E402
from utils.cli import add_debug_flag, run_cli  # noqa: E402
from utils.config import apply_opts, load_config  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.optimizer import build_optimizer  # noqa: E402


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser("GroupViT training throughput")
    parser.add_argument("--cfg", required=True, help="config with a model section")
    parser.add_argument("--opts", nargs="+", help="config overrides (key=value)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--batch-size", type=int, default=None, help="default: data.batch_size")
    parser.add_argument("--iters", type=int, default=10, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(cfg, device: torch.device, precision: Precision, batch_size: int, iters: int, warmup: int) -> tuple:
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device).train()
    optimizer = build_optimizer(cfg.train, model)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)
    size = cfg.data.img_aug.img_size
    texts = 1 + cfg.data.text_aug.multi_label
    tokens = torch.randint(1, 49406, (batch_size, texts, 77), device=device)
    tokens[..., 0], tokens[..., 20], tokens[..., 21:] = 49406, 49407, 0  # SOT, 19 words, EOT, padding
    batch = {"image": torch.randn(batch_size, 3, size, size, device=device),
             "text": tokens if texts > 1 else tokens[:, 0]}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(warmup + iters):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        train_step(model, batch, optimizer, scaler, precision, cfg.train.clip_grad)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return batch_size * iters / seconds, seconds / iters, peak_memory_mb(device)


def main(argv: Sequence[str] | None = None) -> list[tuple]:
    args = parse_args(argv)
    cfg = apply_opts(load_config(args.cfg), args.opts)
    if "model" not in cfg:
        raise UserError(f"{args.cfg} has no model section")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but CUDA is not available")
    if args.iters < 1:
        raise UserError("--iters must be at least 1")
    batch_size = args.batch_size or cfg.data.batch_size
    rows = []
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{Path(args.cfg).name} on {device} ({hardware}), batch {batch_size}, {args.iters} timed steps after "
          f"{args.warmup} warmup steps")
    print(f"{'precision':>9}  {'images/s':>10}  {'s/step':>8}  {'peak memory (MiB)':>17}")
    for name in args.precision:
        precision = resolve_precision(OmegaConf.merge(cfg.train, {"amp": name}), device)
        images_per_s, step_s, memory = measure(cfg, device, precision, batch_size, args.iters, args.warmup)
        rows.append((name, images_per_s, step_s, memory))
        print(f"{name:>9}  {images_per_s:>10.1f}  {step_s:>8.3f}  {memory:>17.0f}", flush=True)
    return rows


if __name__ == "__main__":
    run_cli(main)
