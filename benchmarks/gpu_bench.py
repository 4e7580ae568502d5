"""One-GPU benchmark: training images/s, MFU and peak memory (bf16, fp32, TF32, bf16 + torch.compile) and
segmentation images/s, in one run of a few minutes. Writes results.json and RESULTS.md to the output folder.

    python benchmarks/gpu_bench.py --out-dir /path/to/out        # or set BENCH_OUT (or OUT); default bench_out/

Training: ``training.step.train_step`` (forward, backward, gradient clipping at train.clip_grad, AdamW) of the
config's model (default: the full yfcc model with its multi-label loss, 224 px) on one synthetic batch already on the
GPU (random images; captions of 5-40 tokens and 3 noun prompts from the CLIP templates): the data pipeline is not
measured (see data_speed.py for images/s per loader worker). Variants, in this order:
- bf16: bfloat16 autocast;
- fp32: float32 as main_group_vit.py runs it (PyTorch's default: TF32 matmuls off);
- tf32: float32 with TF32 matmuls allowed;
- bf16+compile: bf16 after ``model.compile_towers()`` (its compile time is reported separately).
FLOPs per image: ``torch.utils.flop_counter.FlopCounterMode`` over one forward + backward of the same batch (matmuls,
convolutions and attention, counted as 2 FLOPs per multiply-add; elementwise work, normalisation, softmax and the
optimizer are not counted), divided by the batch size. The text tower runs only up to each batch's longest text, so
the count reflects the real inputs. MFU = FLOPs per image x images/s / the GPU's dense peak for the precision
(H100 SXM: 989 TFLOP/s bf16, 495 TF32, 67 FP32; H100 PCIe, H200, A100 known; else --peak-tflops).
Segmentation: VOC-sized 448x597 images (2 windows of 448, stride 224, 21 classes), one image per call as the
evaluator runs: ours in fp32 (TF32 off) and under bf16 autocast, and the reference-faithful path (one window at a
time, encoder twice; benchmarks/naive.py) in fp32.

Stages run in the order FLOP count, eager training variants, segmentation, compiled training. Every stage checks the
remaining ``--time-budget`` first and is skipped (and reported as skipped) when it would not fit; an error in a stage
is recorded and the next one runs; results are written after every stage, so a run cut short still leaves them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from omegaconf import OmegaConf

from common import (  # isort: skip  (benchmarks/ is not a package; common puts the project on sys.path)
    ROOT, Table, append_results, full_config, machine_description, synchronize, text_batch, time_interleaved)
from naive import ReferenceSegInference, reference_faithful  # noqa: E402

from models import build_model  # noqa: E402
from segmentation.datasets import VOC_CLASSES  # noqa: E402
from segmentation.evaluation import build_segmentor, load_seg_config  # noqa: E402
from training.precision import resolve_precision  # noqa: E402
from training.step import train_step  # noqa: E402
from utils.config import apply_opts  # noqa: E402
from utils.optimizer import build_optimizer  # noqa: E402

PEAK_TFLOPS = {  # dense tensor-core peaks by device-name fragment, first match wins: (bf16, tf32, fp32)
    "H100 PCIe": (756.0, 378.0, 51.2),
    "H100 NVL": (835.0, 418.0, 60.0),
    "H100": (989.4, 494.7, 66.9),
    "H200": (989.4, 494.7, 66.9),
    "A100": (312.0, 156.0, 19.5),
}
VARIANTS = ("bf16", "fp32", "tf32", "bf16+compile")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser("GroupViT one-GPU benchmark")
    parser.add_argument("--cfg", default=str(ROOT / "configs" / "group_vit_gcc_yfcc_30e.yml"))
    parser.add_argument("--opts", nargs="+", help="config overrides (key=value)")
    parser.add_argument("--batch-size", type=int, default=256, help="per-GPU batch (the paper: 256)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--steps", type=int, default=15, help="timed training steps per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (after compilation)")
    parser.add_argument("--seg-images", type=int, default=10,
                        help="timed images per segmentation variant (0 skips the segmentation stage)")
    parser.add_argument("--time-budget", type=float, default=300,
                        help="seconds; a stage that would not fit in what is left is skipped")
    parser.add_argument("--peak-tflops", type=float, nargs=3, metavar=("BF16", "TF32", "FP32"),
                        help="the GPU's dense peaks when its name is not in the table")
    parser.add_argument("--out-dir", default=os.environ.get("BENCH_OUT") or os.environ.get("OUT") or "bench_out")
    parser.add_argument("--device", default="cuda")
    return parser.parse_args(argv)


class Run:
    """Results so far, the time budget, and the output files (rewritten after every stage)."""

    def __init__(self, args: argparse.Namespace, device: torch.device):
        self.args, self.device, self.start = args, device, time.perf_counter()
        self.out = Path(args.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.results: dict = {"machine": machine_description(device), "args": vars(args), "train": {}, "seg": {},
                              "skipped": [], "errors": {}}
        self.train_table = Table(["variant", "images/s", "ms/step", "peak GiB", "TFLOP/s", "MFU", "compile s"], [])
        self.seg_table = Table(["variant", "images/s", "ms/image", "speed-up vs reference"], [])

    def left(self) -> float:
        return self.args.time_budget - (time.perf_counter() - self.start)

    def fits(self, name: str, seconds: float) -> bool:
        if self.left() >= seconds:
            return True
        self.results["skipped"].append(f"{name} (needs ~{seconds:.0f} s, {self.left():.0f} s left)")
        print(f"skipped {name}: needs ~{seconds:.0f} s, {self.left():.0f} s left", flush=True)
        self.save()
        return False

    def stage(self, name: str, seconds: float, fn: Callable[[], None]) -> None:
        """Run one stage when ``seconds`` are left; an error is recorded and the next stage runs."""
        if not self.fits(name, seconds):
            return
        try:
            fn()
        except Exception as e:  # one failed stage must not lose the others
            self.results["errors"][name] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        finally:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()  # the stage's models are gone
            self.save()

    def save(self) -> None:
        self.results["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        (self.out / "results.json").write_text(json.dumps(self.results, indent=2, default=str))
        notes = [f"skipped: {s}" for s in self.results["skipped"]] + self.results.get("notes", [])
        notes += [f"error in {name}: {error}" for name, error in self.results["errors"].items()]
        markdown = self.out / "RESULTS.md"
        markdown.unlink(missing_ok=True)
        append_results("One-GPU benchmark", self.results["machine"], [self.train_table, self.seg_table], notes,
                       path=markdown, quiet=True)


def peak_flops(device: torch.device, precision: str, override: list[float] | None) -> float | None:
    """Dense peak FLOP/s of the GPU for bf16 / tf32 / fp32, or None when unknown."""
    column = {"bf16": 0, "tf32": 1, "fp32": 2}[precision]
    if override:
        return override[column] * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, peaks in PEAK_TFLOPS.items():
        if fragment in name:
            return peaks[column] * 1e12
    return None


@contextlib.contextmanager
def tf32(enabled: bool):
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def flops_per_image(model: torch.nn.Module, batch: dict) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    counter = FlopCounterMode(display=False)
    with counter:  # one block: entering the counter again would reset it
        with torch.autocast(batch["image"].device.type, dtype=torch.bfloat16):
            losses = model(**batch)
        sum(v for k, v in losses.items() if "loss" in k).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch["image"].shape[0]


def train_variant(run: Run, cfg, variant: str, batch: dict, flops: float) -> None:
    args, device = run.args, run.device
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device).train()
    optimizer = build_optimizer(cfg.train, model)
    amp = "bf16" if variant.startswith("bf16") else "fp32"
    precision = resolve_precision(OmegaConf.merge(cfg.train, {"amp": amp}), device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)

    def step() -> None:
        train_step(model, batch, optimizer, scaler, precision, cfg.train.clip_grad)

    with tf32(variant == "tf32"):
        compile_s = None
        if variant.endswith("+compile"):
            start = time.perf_counter()
            model.compile_towers()
            step()  # compiles
            synchronize(device)
            compile_s = time.perf_counter() - start
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        timing = time_interleaved({variant: step}, repeats=args.steps, warmup=args.warmup, device=device,
                                  min_seconds=0)[variant]
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    rate = timing.rate(args.batch_size)
    peak_fl = peak_flops(device, "tf32" if variant == "tf32" else amp, args.peak_tflops)
    achieved = flops * rate
    mfu = achieved / peak_fl if peak_fl and flops else None
    run.results["train"][variant] = {"images_per_s": rate, "ms_per_step": 1000 * timing.median,
                                     "peak_memory_gib": peak, "tflops": achieved / 1e12, "mfu": mfu,
                                     "compile_s": compile_s, "spread": timing.spread}
    run.train_table.add(variant, rate, 1000 * timing.median, peak, achieved / 1e12,
                        None if mfu is None else f"{mfu:.1%}", compile_s)


def seg_stage(run: Run, cfg) -> None:
    from mmseg.structures import SegDataSample

    device = run.device
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device).eval()
    seg_cfg = load_seg_config(ROOT / "segmentation/configs/_base_/datasets/pascal_voc12.py")
    ours = build_segmentor(model, list(VOC_CLASSES), seg_cfg)
    ref = ReferenceSegInference.like(ours, seg_cfg.data_preprocessor)
    image = torch.randn(1, 3, 448, 597, generator=torch.Generator().manual_seed(0)).to(device)
    meta = dict(ori_shape=(375, 500), img_shape=(448, 597))

    def predict(seg, precision: str, faithful: bool = False) -> Callable[[], None]:
        def call() -> None:
            with torch.no_grad(), reference_faithful() if faithful else contextlib.nullcontext(), \
                    torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                for _ in range(run.args.seg_images):
                    seg.predict(image, [SegDataSample(metainfo=dict(meta))])
        return call

    variants = {"reference fp32": predict(ref, "fp32", faithful=True), "ours fp32": predict(ours, "fp32"),
                "ours bf16": predict(ours, "bf16")}
    timings = time_interleaved(variants, repeats=3, warmup=1, device=device, min_seconds=0)
    for name, timing in timings.items():
        rate = timing.rate(run.args.seg_images)
        speedup = timings["reference fp32"].median / timing.median
        run.results["seg"][name] = {"images_per_s": rate, "speedup_vs_reference": speedup, "spread": timing.spread}
        run.seg_table.add(name, rate, 1000 / rate, f"{speedup:.2f}x")


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    run = Run(args, device)
    print(run.results["machine"], flush=True)
    cfg = apply_opts(full_config(args.cfg), args.opts)
    size, multi = cfg.data.img_aug.img_size, cfg.data.text_aug.multi_label
    batch = {"image": torch.randn(args.batch_size, 3, size, size, generator=torch.Generator().manual_seed(0)),
             "text": text_batch(args.batch_size, multi)}
    batch = {k: v.to(device) for k, v in batch.items()}
    torch.manual_seed(0)
    run.stage("FLOP count", 20, lambda: run.results.update(
        flops_per_image=flops_per_image(build_model(cfg.model).to(device), batch)))
    flops = run.results.get("flops_per_image", 0.0)
    run.results["notes"] = [
        f"{Path(args.cfg).name}, batch {args.batch_size}, {size} px, text [B, {1 + multi}, 77] (captions 5-40 "
        f"tokens); {flops / 1e9:.1f} GFLOP per image per training step (forward + backward, counted by "
        "FlopCounterMode: matmuls, convolutions, attention)",
        "training: train_step with AdamW and clipping on one synthetic batch on the GPU (no data loading); "
        f"{args.steps} timed steps after {args.warmup} warmup steps; median step time",
        f"segmentation: 448x597 inputs (2 windows), {args.seg_images} images per timed call, 3 calls"]
    run.save()
    print(run.train_table.header(), flush=True)
    eager = [v for v in args.variants if not v.endswith("compile")]
    for variant in eager:
        run.stage(f"training {variant}", 30, lambda v=variant: train_variant(run, cfg, v, batch, flops))
    if args.seg_images > 0:
        print(run.seg_table.header(), flush=True)
        run.stage("segmentation", 40, lambda: seg_stage(run, cfg))
    for variant in (v for v in args.variants if v not in eager):  # last: compiling takes the longest
        run.stage(f"training {variant}", 150, lambda v=variant: train_variant(run, cfg, v, batch, flops))
    print(f"results in {run.out}/results.json and {run.out}/RESULTS.md ({run.results['elapsed_s']} s)")
    return run.results


if __name__ == "__main__":
    main()
