"""Gradient accumulation (``train.accumulation_steps``): cost and exactness of the feature-cache step.

    python benchmarks/accumulation.py --cfg configs/quickstart.yml --batch-size 16 --accumulation 4 --device cpu

Cost: images/s and peak memory of full training steps (forward, backward, clipping, AdamW; random images and
caption + prompt tokens, no data loading) for one batch of K x B (``train_step``), K micro-batches of B as one step
(``accumulated_step``) and one batch of B (what fits without accumulation). Peak memory: the tensors one step
allocates (``benchmarks.common.peak_memory_mib``).

Exactness: the relative difference |u_K - u| / |u| between the weight update of one accumulated SGD step (lr 1, so
minus the gradient) and that of the K x B batch, with drop path and Gumbel noise off (their noise differs between
the two by construction), for the config's projectors (BatchNorm when ``proj_num_layers`` > 1: each micro-batch is
normalised by its own statistics) and with ``proj_num_layers: 1`` (no BatchNorm: float32 rounding only); and the
same for the old rule (each micro-batch's own losses, summed).
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import OmegaConf

from common import (  # isort: skip  (benchmarks/ is not a package; common puts the project on sys.path)
    Table, append_results, full_config, machine_description, peak_memory_mib, set_threads, text_batch,
    time_interleaved)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import build_model  # noqa: E402
from training.precision import FP32  # noqa: E402
from training.step import accumulated_step, train_step  # noqa: E402
from utils.cli import add_debug_flag, run_cli  # noqa: E402
from utils.config import apply_opts  # noqa: E402
from utils.optimizer import build_optimizer  # noqa: E402


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser("GroupViT gradient accumulation: cost and exactness")
    parser.add_argument("--cfg", default="configs/quickstart.yml", help="config with a model section")
    parser.add_argument("--opts", nargs="+", help="config overrides (key=value)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=16, help="micro-batch size B")
    parser.add_argument("--accumulation", type=int, default=4, help="micro-batches per step K")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per variant (interleaved)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    parser.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def make_batch(cfg, size: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    side = cfg.data.img_aug.img_size
    image = torch.randn(size, 3, side, side, generator=generator)
    return {"image": image.to(device), "text": text_batch(size, cfg.data.text_aug.multi_label, seed).to(device)}


def split(batch: dict[str, torch.Tensor], parts: int) -> list[dict[str, torch.Tensor]]:
    chunks = {k: v.chunk(parts) for k, v in batch.items()}
    return [{k: chunks[k][i] for k in batch} for i in range(parts)]


def cost(cfg, device: torch.device, batch_size: int, accumulation: int, repeats: int) -> Table:
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device).train()
    optimizer = build_optimizer(cfg.train, model)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    big, small = make_batch(cfg, batch_size * accumulation, device), make_batch(cfg, batch_size, device)
    micro = split(big, accumulation)
    variants = {
        f"one batch of {batch_size * accumulation}": (batch_size * accumulation,
                                                      lambda: train_step(model, big, optimizer, scaler, FP32, 5.0)),
        f"{accumulation} x {batch_size} accumulated": (batch_size * accumulation,
                                                       lambda: accumulated_step(model, micro, optimizer, scaler,
                                                                                FP32, 5.0)),
        f"one batch of {batch_size}": (batch_size, lambda: train_step(model, small, optimizer, scaler, FP32, 5.0)),
    }
    timings = time_interleaved({k: v[1] for k, v in variants.items()}, repeats, warmup=1, device=device,
                               min_seconds=0)
    table = Table(["step", "images/step", "images/s", "s/step", "peak memory (MiB)"], [])
    print(table.header())
    for name, (images, run) in variants.items():
        table.add(name, images, timings[name].rate(images), timings[name].median, peak_memory_mib(run, device))
    return table


def update(model, run) -> torch.Tensor:
    """The flattened weight change of one SGD step (lr 1) of a copy of ``model``."""
    model = copy.deepcopy(model)
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    run(model, optimizer, torch.amp.GradScaler("cpu", enabled=False))
    return torch.cat([p.detach().flatten() for p in model.parameters()]) - before


def old_rule(model, optimizer, micro) -> None:
    for batch in micro:
        (sum(model(**batch).values()) / len(micro)).backward()
    optimizer.step()


def exactness(cfg, device: torch.device, batch_size: int, accumulation: int) -> Table:
    table = Table(["projectors", "accumulated vs big batch", "old per-micro-batch sum vs big batch"], [])
    print(table.header())
    big = make_batch(cfg, batch_size * accumulation, device, seed=1)
    micro = split(big, accumulation)
    for layers in sorted({cfg.model.proj_num_layers, 1}, reverse=True):
        model_cfg = OmegaConf.merge(cfg.model, {"proj_num_layers": layers,
                                                "img_encoder": {"drop_path_rate": 0.0, "hard_assignment": False}})
        torch.manual_seed(0)
        model = build_model(model_cfg).to(device).train()
        reference = update(model, lambda m, o, s: train_step(m, big, o, s, FP32, None))
        accumulated = update(model, lambda m, o, s: accumulated_step(m, micro, o, s, FP32, None))
        old = update(model, lambda m, o, s: old_rule(m, o, micro))
        name = f"{layers} layer{'s' if layers > 1 else ''}" + (" (BatchNorm)" if layers > 1 else " (no BatchNorm)")
        table.add(name, ((accumulated - reference).norm() / reference.norm()).item(),
                  ((old - reference).norm() / reference.norm()).item())
    return table


def main(argv: Sequence[str] | None = None) -> list[Table]:
    args = parse_args(argv)
    set_threads(args.threads)
    device = torch.device(args.device)
    cfg = full_config(args.cfg)
    if args.opts:
        apply_opts(cfg, args.opts)
    machine = machine_description(device)
    print(machine)
    tables = [cost(cfg, device, args.batch_size, args.accumulation, args.repeats),
              exactness(cfg, device, args.batch_size, args.accumulation)]
    if not args.no_append:
        append_results(f"Gradient accumulation, {Path(args.cfg).stem}, B={args.batch_size}, K={args.accumulation}",
                       machine, tables, notes=[
                           "images/s and s/step: median over the interleaved repeats; peak memory: the tensors one "
                           "step allocates.",
                           "exactness: |u_K - u| / |u| of one SGD step's weight update against the big batch's, "
                           "drop path and Gumbel noise off."])
    return tables


if __name__ == "__main__":
    run_cli(main)
