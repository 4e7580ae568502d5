"""Model speed: forward, forward+backward and full training steps; images/s and peak memory; ours vs the naive path
vs transformers.

    python benchmarks/model_speed.py                                    # yfcc + the small model, 1 thread
    python benchmarks/model_speed.py --cfg configs/group_vit_gcc_yfcc_30e.yml --batch-size 32 --precision fp32
    python benchmarks/model_speed.py --modes train-step --compile       # adds torch.compile (minutes on a CPU)

What is compared, on the same weights and inputs, interleaved:
- ours: the library model;
- naive: the same model with the reference-faithful computations of models/reference_faithful.py (explicit
  attention, all 77 text positions, one text pass, Conv1d projectors);
- hf: transformers' ``GroupViTModel`` built by ``hf_config_from_model_cfg`` with our weights converted by
  ``reference_to_hf`` (same sizes, same values);
- ours+compile (``--compile``): ours after ``compile_towers()``.
Modes:
- 'forward': eval mode under no_grad (BatchNorm running statistics, no Gumbel noise) of the image and text towers,
  projectors and the symmetric contrastive loss, single-label captions [B, 77]: ours/naive
  ``forward_train(image, text)``, hf ``GroupViTModel(input_ids, pixel_values, return_loss=True)``;
- 'forward+backward': the same in training mode (Gumbel noise, BatchNorm batch statistics; ours and naive also
  DropPath, which HF lacks) and the loss's backward; no optimizer;
- 'train-step': ``training.step.train_step`` (forward, backward, gradient clipping, AdamW) with the config's own
  text ([B, 1 + M, 77] with the multi-label loss, as in training); ours vs naive (hf has no multi-label loss).
Captions are random token ids of 5-40 tokens, noun prompts come from the 80 CLIP templates (common.text_batch).
Peak memory: the most tensor memory alive during one call above what was allocated before it (weights excluded).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from omegaconf import OmegaConf

from common import (  # isort: skip  (benchmarks/ is not a package; common puts the project on sys.path)
    BASIS_NOTE, Table, append_results, autocast, bf16_supported, default_cfgs, full_config, machine_description,
    peak_memory_mib, set_threads, text_batch, time_interleaved, timing_basis)
from models import build_model  # noqa: E402
from models.hf_convert import hf_config_from_model_cfg, reference_to_hf  # noqa: E402
from models.reference_faithful import reference_faithful  # noqa: E402
from training.precision import resolve_precision  # noqa: E402
from training.step import train_step  # noqa: E402
from utils.optimizer import build_optimizer  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
MODES = ("forward", "forward+backward", "train-step")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser("GroupViT model speed: ours vs naive vs transformers")
    parser.add_argument("--cfg", nargs="+", default=default_cfgs(), help="configs with a model section")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"],
                        help="bf16 is skipped where the device has no native bf16")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-hf", action="store_true", help="leave out transformers' model")
    parser.add_argument("--compile", action="store_true", help="add ours after compile_towers() (slow to compile)")
    parser.add_argument("--no-results", action="store_true", help="do not append to benchmarks/RESULTS.md")
    return parser.parse_args(argv)


def build(model_cfg, device: torch.device, **changes) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model({**OmegaConf.to_container(model_cfg, resolve=True), **changes}).to(device)


def build_hf(model_cfg, ours: torch.nn.Module) -> torch.nn.Module:
    from transformers import GroupViTModel

    hf = GroupViTModel(hf_config_from_model_cfg(model_cfg))
    missing, unexpected = hf.load_state_dict(reference_to_hf(ours.state_dict()), strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    return hf.to(next(ours.parameters()).device)


def loss_step(model: torch.nn.Module, call: Callable[[], torch.Tensor], training: bool, device: torch.device,
              precision: str, naive: bool = False) -> Callable[[], None]:
    """One 'forward' (eval, no_grad) or 'forward+backward' (training) call; ``call`` returns the loss."""
    def run() -> None:
        model.train(training)
        with reference_faithful() if naive else contextlib.nullcontext(), autocast(device, precision):
            with torch.set_grad_enabled(training):
                loss = call()
        if training:
            loss.backward()
            model.zero_grad(set_to_none=True)
    return run


def optimizer_step(model: torch.nn.Module, cfg, batch: dict, device: torch.device, precision: str,
                   naive: bool = False) -> Callable[[], None]:
    """One full training step (training.step.train_step: forward, backward, clipping, AdamW)."""
    optimizer = build_optimizer(cfg.train, model)
    prec = resolve_precision(OmegaConf.merge(cfg.train, {"amp": precision}), device)
    scaler = torch.amp.GradScaler(device.type, enabled=prec.use_scaler)

    def run() -> None:
        model.train()
        with reference_faithful() if naive else contextlib.nullcontext():
            train_step(model, batch, optimizer, scaler, prec, cfg.train.clip_grad)
    return run


def add_rows(table: Table, name: str, precision: str, mode: str, variants: dict[str, Callable[[], None]],
             batch_size: int, args: argparse.Namespace, device: torch.device) -> None:
    timings = time_interleaved(variants, args.repeats, args.warmup, device)
    for variant, timing in timings.items():
        ratios = [f"{timings[base].median / timing.median:.2f}x" if base in timings else None
                  for base in ("naive", "hf")]
        table.add(name, precision, mode, variant, timing.rate(batch_size), timing.wall_rate(batch_size),
                  f"{timing.spread:.0%}", peak_memory_mib(variants[variant], device), *ratios)


def bench_config(cfg_path: str, args: argparse.Namespace, precisions: list[str], device: torch.device,
                 table: Table) -> None:
    """Add one config's rows (every precision, mode and variant) to ``table``."""
    name, cfg = Path(cfg_path).stem, full_config(cfg_path)
    size, B = cfg.model.img_encoder.get("img_size", 224), args.batch_size
    image = torch.randn(B, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    print(f"\n{name}: batch {B}, {size}x{size} images")
    print(table.header())
    single = build(cfg.model, device, multi_label=0)  # single-label: equal work with transformers
    compiled = build(cfg.model, device, multi_label=0) if args.compile else None
    if compiled is not None:
        compiled.compile_towers()
    hf = None if args.no_hf else build_hf(cfg.model, single)
    captions = text_batch(B, multi_label=0).to(device)
    for precision in precisions:
        for mode in (m for m in args.modes if m != "train-step"):
            training = mode == "forward+backward"
            calls = {"ours": (single, lambda m=single: m.forward_train(image, captions)["loss"]), "naive": None}
            if compiled is not None:
                calls["ours+compile"] = (compiled, lambda: compiled.forward_train(image, captions)["loss"])
            if hf is not None:
                calls["hf"] = (hf, lambda: hf(input_ids=captions, pixel_values=image, return_loss=True).loss)
            calls["naive"] = calls["ours"]
            add_rows(table, name, precision, mode, {
                variant: loss_step(model, call, training, device, precision, naive=variant == "naive")
                for variant, (model, call) in calls.items()}, B, args, device)
    if "train-step" not in args.modes:
        return
    multi = cfg.model.get("multi_label", 0)
    batch = {"image": image, "text": text_batch(B, multi).to(device)}
    models = {"ours": build(cfg.model, device), "naive": None}
    models["naive"] = models["ours"]
    if args.compile:
        models["ours+compile"] = build(cfg.model, device)
        models["ours+compile"].compile_towers()
    for precision in precisions:
        add_rows(table, name, precision, f"train-step (M={multi})", {
            variant: optimizer_step(model, cfg, batch, device, precision, naive=variant == "naive")
            for variant, model in models.items()}, B, args, device)


def main(argv: Sequence[str] | None = None) -> Table:
    args = parse_args(argv)
    set_threads(args.threads)
    device = torch.device(args.device)
    machine = machine_description(device)
    print(machine)
    precisions = [p for p in args.precision if p != "bf16" or bf16_supported(device)]
    table = Table(["model", "precision", "mode", "variant", "images/s", "wall images/s", "spread", "peak MiB",
                   "vs naive", "vs hf"], [])
    for cfg_path in args.cfg:
        bench_config(cfg_path, args, precisions, device, table)
    notes = [f"batch {args.batch_size}; captions of 5-40 tokens; random weights (seed 0), the same for all variants "
             "(hf: converted with reference_to_hf)",
             BASIS_NOTE[timing_basis(device)],
             "vs naive / vs hf: median time of that variant divided by this row's (above 1 = this row is faster)",
             "spread = (max - min) / median over the repetitions; peak MiB = tensor memory above the weights"]
    if not args.no_results:
        append_results("Model speed: ours vs naive vs transformers", machine, [table], notes)
    return table


if __name__ == "__main__":
    main()
