"""One-GPU benchmark of what users run: a profile of the training step first, then training images/s (per step and
chained), MFU and peak memory for bf16, fp16 + GradScaler (the default CUDA precision), fp32, TF32 and the compiled /
graphed steps, segmentation images/s, and main_group_vit.py's real epoch loop on webdataset shards. Writes
results.json and RESULTS.md to the output folder after every stage.

    python benchmarks/gpu_bench.py --out-dir /path/to/out        # or set BENCH_OUT (or OUT); default bench_out/
    python benchmarks/gpu_bench.py --tiny --device cpu --out-dir /tmp/b   # dry run of every stage on a CPU

Training steps: the project's training step (forward, backward, gradient clipping at train.clip_grad, fused AdamW)
of the config's model (default: the full yfcc model with its multi-label loss, 224 px) on ``--batches`` synthetic
batches already on the device (random images; captions of different length ranges, so the text tower runs several
lengths; 3 noun prompts from the CLIP templates), used in turn. Two timings per variant: 'ms/step' is the median of
steps each followed by a device sync (what the step costs alone), 'chained' runs ``--chain`` steps with one sync at
the end (what a loop that never waits gets: the host queues work ahead). Variants:
- bf16 / fp16 / fp32 / tf32: eager; fp16 with a GradScaler; fp32 as main_group_vit.py runs it (TF32 off);
- bf16+compile: ``train.compile`` (forward_train compiled, fullgraph); compile time reported apart;
- bf16+graph: ``train.cuda_graph`` (the whole step captured per text-length bucket; CUDA only).
Profile (first; it decides what to fix): ``--profile-steps`` bf16 steps under torch.profiler: the GPU's busy time
(union of its kernels) against the wall time, the host's time blocked in synchronisations, the host reads counted
per step (utils/host_sync.py), and the top kernels by GPU time.
FLOPs per image: ``torch.utils.flop_counter.FlopCounterMode`` over one forward + backward (matmuls, convolutions and
attention, 2 FLOPs per multiply-add), divided by the batch size. MFU = FLOPs per image x images/s / the GPU's dense
peak for the precision (H100 SXM: 989 TFLOP/s bf16/fp16, 495 TF32, 67 FP32; H100 PCIe, H200, A100 known; else
--peak-tflops).
Agreement: ``--agreement-steps`` steps eager and the same steps compiled / graphed from the same weights and
batches (bf16): the largest loss difference.
Segmentation: VOC-sized 448x597 images (2 windows of 448, stride 224, 21 classes), one image per call: ours in fp32
and bf16, and the reference segmentor (segmentation/evaluation/reference_segmentor.py) in fp32.
Real loop: ``main_group_vit.main`` on webdataset shards of JPEG photos (short side 512, as img2dataset writes them)
for ``--loop-steps`` iterations, loader workers from the cores (data.num_workers=-1) and uint8 images; images/s over
the iterations after the first ``--warmup`` (time stamps at each batch the loop takes, a device sync at the end).

Every stage checks the remaining ``--time-budget`` first and is skipped (and reported as skipped) when it would not
fit; an error in a stage is recorded and the next one runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from unittest import mock

import torch
import yaml
from omegaconf import OmegaConf

from common import (  # isort: skip  (benchmarks/ is not a package; common puts the project on sys.path)
    ROOT, Table, append_results, full_config, machine_description, synchronize, text_batch, time_interleaved)
from data_speed import write_shards  # noqa: E402

import main_group_vit  # noqa: E402
from datasets.builder import EpochLoader  # noqa: E402
from models import build_model  # noqa: E402
from models.reference_faithful import reference_faithful  # noqa: E402
from models.transformer import text_lengths  # noqa: E402
from segmentation.datasets import VOC_CLASSES  # noqa: E402
from segmentation.evaluation import build_segmentor, load_seg_config  # noqa: E402
from segmentation.evaluation.reference_segmentor import ReferenceSegInference  # noqa: E402
from training.graphs import GraphedStep  # noqa: E402
from training.precision import resolve_precision  # noqa: E402
from training.step import compile_forward, train_step  # noqa: E402
from utils.config import apply_opts, load_config  # noqa: E402
from utils.host_sync import HostSyncCounter  # noqa: E402
from utils.optimizer import build_optimizer  # noqa: E402

PEAK_TFLOPS = {  # dense tensor-core peaks by device-name fragment, first match wins: (bf16, tf32, fp32)
    "H100 PCIe": (756.0, 378.0, 51.2),
    "H100 NVL": (835.0, 418.0, 60.0),
    "H100": (989.4, 494.7, 66.9),
    "H200": (989.4, 494.7, 66.9),
    "A100": (312.0, 156.0, 19.5),
}
VARIANTS = ("bf16", "fp16", "fp32", "tf32", "bf16+compile", "bf16+graph")
CAPTION_RANGES = ((5, 12), (5, 40), (20, 60), (5, 75))  # caption token counts of the synthetic batches, in turn
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser("GroupViT one-GPU benchmark")
    parser.add_argument("--cfg", default=str(ROOT / "configs" / "group_vit_gcc_yfcc_30e.yml"))
    parser.add_argument("--opts", nargs="+", help="config overrides (key=value)")
    parser.add_argument("--batch-size", type=int, default=256, help="per-GPU batch (the paper: 256)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--batches", type=int, default=4, help="synthetic batches of different text lengths")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per variant (each followed by a sync)")
    parser.add_argument("--chain", type=int, default=20, help="steps of a chained timing (one sync at the end)")
    parser.add_argument("--warmup", type=int, default=4, help="untimed steps first (after compilation)")
    parser.add_argument("--profile-steps", type=int, default=5, help="profiled bf16 steps (0 skips the profile)")
    parser.add_argument("--agreement-steps", type=int, default=200,
                        help="steps of the eager vs compiled/graphed loss comparison (0 skips it)")
    parser.add_argument("--loop-steps", type=int, default=60,
                        help="iterations of main_group_vit.py's loop on shards (0 skips the real-loop stage)")
    parser.add_argument("--loop-amp", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--seg-images", type=int, default=10,
                        help="timed images per segmentation variant (0 skips the segmentation stage)")
    parser.add_argument("--time-budget", type=float, default=420,
                        help="seconds; a stage that would not fit in what is left is skipped")
    parser.add_argument("--peak-tflops", type=float, nargs=3, metavar=("BF16", "TF32", "FP32"),
                        help="the GPU's dense peaks when its name is not in the table")
    parser.add_argument("--out-dir", default=os.environ.get("BENCH_OUT") or os.environ.get("OUT") or "bench_out")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend of bf16+compile")
    parser.add_argument("--tiny", action="store_true",
                        help="dry run: the golden tiny model, batch 4, a few steps of every stage (any device)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.cfg = str(ROOT / "tests" / "golden" / "tiny_model.yml")
        args.batch_size, args.batches, args.steps, args.chain, args.warmup = 4, 2, 2, 3, 1
        args.profile_steps, args.agreement_steps, args.loop_steps, args.seg_images = 2, 3, 4, 1
        args.compile_backend = "aot_eager" if args.device == "cpu" else args.compile_backend  # no C++ build on a CPU
    return args


class Run:
    """Results so far, the time budget, and the output files (rewritten after every stage)."""

    def __init__(self, args: argparse.Namespace, device: torch.device):
        self.args, self.device, self.start = args, device, time.perf_counter()
        self.out = Path(args.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.results: dict = {"machine": machine_description(device), "args": vars(args), "profile": {},
                              "train": {}, "agreement": {}, "seg": {}, "loop": {}, "skipped": [], "errors": {}}
        self.profile_table = Table(["kernel", "ms/step", "calls/step", "share"], [])
        self.train_table = Table(["variant", "images/s chained", "ms/step chained", "ms/step synced", "peak GiB",
                                  "TFLOP/s", "MFU", "compile s"], [])
        self.seg_table = Table(["variant", "images/s", "ms/image", "speed-up vs reference"], [])
        self.loop_table = Table(["loop", "images/s", "ms/iteration", "iterations", "workers"], [])

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
        print(f"--- {name} ({self.left():.0f} s left)", flush=True)
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
        tables = [self.profile_table, self.train_table, self.seg_table, self.loop_table]
        append_results("One-GPU benchmark", self.results["machine"], [t for t in tables if t.rows], notes,
                       path=markdown, quiet=True)


def peak_flops(device: torch.device, precision: str, override: list[float] | None) -> float | None:
    """Dense peak FLOP/s of the GPU for bf16 (= fp16) / tf32 / fp32, or None when unknown."""
    column = {"bf16": 0, "fp16": 0, "tf32": 1, "fp32": 2}[precision]
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


def make_batches(args: argparse.Namespace, cfg, device: torch.device) -> list[dict]:
    """``--batches`` synthetic batches on the device, captions of CAPTION_RANGES in turn, with their host lengths."""
    size, multi = cfg.data.img_aug.img_size, cfg.data.text_aug.multi_label
    batches = []
    for index in range(args.batches):
        text = text_batch(args.batch_size, multi, seed=index, lengths=CAPTION_RANGES[index % len(CAPTION_RANGES)])
        image = torch.randn(args.batch_size, 3, size, size, generator=torch.Generator().manual_seed(index))
        batches.append({"image": image.to(device), "text": text.to(device),
                        "text_lengths": text_lengths(text, cfg.train.text_length_multiple)})
    return batches


class Trainer:
    """A model, its optimizer and scaler, and ``step(batch)``: the training step of one variant."""

    def __init__(self, cfg, variant: str, device: torch.device, seed: int = 0, backend: str = "inductor"):
        torch.manual_seed(seed)
        self.model = build_model(cfg.model).to(device).train()
        self.optimizer = build_optimizer(cfg.train, self.model)
        amp = variant.split("+")[0].replace("tf32", "fp32")
        self.precision = resolve_precision(OmegaConf.merge(cfg.train, {"amp": amp}), device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision.use_scaler)
        self.clip_grad = cfg.train.clip_grad
        if "+compile" in variant:
            compile_forward(self.model, cfg.train.text_length_multiple, backend)
        self.graphed = GraphedStep(self.model, self.optimizer, self.scaler, self.precision, self.clip_grad) if \
            "+graph" in variant else None

    def step(self, batch: dict) -> dict[str, torch.Tensor]:
        if self.graphed is not None:
            return self.graphed(batch)[0]
        losses, _, _ = train_step(self.model, batch, self.optimizer, self.scaler, self.precision, self.clip_grad)
        return losses


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


def busy_union(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by [start, end) intervals (overlapping kernels on several streams count once)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def profile_stage(run: Run, cfg, batches: list[dict]) -> None:
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    args, device = run.args, run.device
    trainer = Trainer(cfg, "bf16", device)
    for index in range(args.warmup):
        trainer.step(batches[index % len(batches)])
    with HostSyncCounter() as reads:
        trainer.step(batches[0])
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    synchronize(device)
    with profile(activities=activities) as prof:
        wall = time.perf_counter()
        for index in range(args.profile_steps):
            trainer.step(batches[index % len(batches)])
        synchronize(device)
        wall = time.perf_counter() - wall
    steps, events = args.profile_steps, prof.events()
    kernels = [e for e in events if e.device_type == DeviceType.CUDA]
    busy = busy_union([(e.time_range.start, e.time_range.end) for e in kernels]) / 1e6
    syncs = [e for e in events if e.name in SYNC_CALLS]
    result = {"wall_ms_per_step": 1000 * wall / steps, "host_reads_per_step": dict(reads.counts),
              "kernels_per_step": len(kernels) / steps}
    if cuda:
        result.update(gpu_busy_ms_per_step=1000 * busy / steps, gpu_busy_share=busy / wall,
                      syncs_per_step=len(syncs) / steps,
                      sync_blocked_ms_per_step=sum(e.cpu_time_total for e in syncs) / 1000 / steps)
    own_time = "self_device_time_total" if cuda else "self_cpu_time_total"
    averages = [a for a in prof.key_averages() if getattr(a, own_time, 0) > 0 and
                (not cuda or a.device_type == DeviceType.CUDA or getattr(a, "self_device_time_total", 0) > 0)]
    averages.sort(key=lambda a: getattr(a, own_time), reverse=True)
    total = sum(getattr(a, own_time) for a in averages) or 1
    result["top"] = []
    for a in averages[:12]:
        ms, share = getattr(a, own_time) / 1000 / steps, getattr(a, own_time) / total
        result["top"].append({"name": a.key, "ms_per_step": ms, "calls_per_step": a.count / steps, "share": share})
        run.profile_table.add(a.key[:70], ms, a.count / steps, f"{share:.1%}")
    run.results["profile"] = result
    summary = (f"profile (bf16, {steps} steps): wall {result['wall_ms_per_step']:.1f} ms/step, "
               f"{result['kernels_per_step']:.0f} kernels/step, host reads per step {dict(reads.counts) or 0}")
    if cuda:
        summary += (f"; GPU busy {result['gpu_busy_ms_per_step']:.1f} ms/step ({result['gpu_busy_share']:.0%} of "
                    f"the wall), {result['syncs_per_step']:.1f} syncs/step blocking the host "
                    f"{result['sync_blocked_ms_per_step']:.1f} ms/step")
    run.results.setdefault("notes", []).append(summary)
    print(summary, flush=True)


def train_variant(run: Run, cfg, variant: str, batches: list[dict], flops: float) -> None:
    args, device = run.args, run.device
    if device.type != "cuda" and variant.split("+")[0] in ("fp16", "tf32") or "+graph" in variant and \
            device.type != "cuda":
        run.results["skipped"].append(f"training {variant} (CUDA only)")
        return
    trainer = Trainer(cfg, variant, device, backend=args.compile_backend)
    turn = iter(range(10**9))

    def step() -> None:
        trainer.step(batches[next(turn) % len(batches)])

    def chain() -> None:
        for _ in range(args.chain):
            step()

    with tf32(variant == "tf32"):
        compile_s = None
        if "+compile" in variant or "+graph" in variant:
            start = time.perf_counter()
            for _ in range(len(batches) * (4 if "+graph" in variant else 1)):  # compile / warm up + capture
                step()
            synchronize(device)
            compile_s = time.perf_counter() - start
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        synced = time_interleaved({variant: step}, repeats=args.steps, warmup=args.warmup, device=device,
                                  min_seconds=0)[variant]
        chained = time_interleaved({variant: chain}, repeats=2, warmup=0, device=device, min_seconds=0)[variant]
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    ms_chained = 1000 * min(chained.wall) / args.chain
    rate = 1000 * args.batch_size / ms_chained
    peak_fl = peak_flops(device, variant.split("+")[0], args.peak_tflops)
    achieved = flops * rate
    mfu = achieved / peak_fl if peak_fl and flops else None
    run.results["train"][variant] = {"images_per_s_chained": rate, "ms_per_step_chained": ms_chained,
                                     "ms_per_step_synced": 1000 * synced.median, "peak_memory_gib": peak,
                                     "tflops": achieved / 1e12, "mfu": mfu, "compile_s": compile_s,
                                     "spread_synced": synced.spread}
    run.train_table.add(variant, rate, ms_chained, 1000 * synced.median, peak, achieved / 1e12,
                        None if mfu is None else f"{mfu:.1%}", compile_s)


def agreement_stage(run: Run, cfg, batches: list[dict], variants: list[str]) -> None:
    """The same steps eager and compiled / graphed (bf16, same weights, batches and seeds): the largest loss gap."""
    losses = {}
    for variant in ["bf16", *variants]:
        trainer = Trainer(cfg, variant, run.device, seed=0, backend=run.args.compile_backend)
        torch.manual_seed(1)
        values = [trainer.step(batches[i % len(batches)])["total_loss"].clone()  # (a graph's outputs are reused)
                  for i in range(run.args.agreement_steps)]
        losses[variant] = torch.stack(values).float().cpu()
    for variant in variants:
        gap = (losses[variant] - losses["bf16"]).abs()
        run.results["agreement"][variant] = {"steps": run.args.agreement_steps, "max_loss_difference": float(gap.max()),
                                             "first_loss": float(losses["bf16"][0]),
                                             "last_loss": float(losses["bf16"][-1])}
        run.results.setdefault("notes", []).append(
            f"agreement over {run.args.agreement_steps} bf16 steps: {variant} vs eager, largest loss difference "
            f"{float(gap.max()):.3g} (eager loss {float(losses['bf16'][0]):.3f} -> {float(losses['bf16'][-1]):.3f})")


@contextlib.contextmanager
def batch_clock(device: torch.device):
    """Time stamps of every batch the epoch loop takes from an EpochLoader, and one after a device sync at its end."""
    stamps: list[float] = []
    real = EpochLoader.__iter__

    def timed(self):
        for batch in real(self):
            stamps.append(time.perf_counter())
            yield batch
        synchronize(device)
        stamps.append(time.perf_counter())

    with mock.patch.object(EpochLoader, "__iter__", timed):
        yield stamps


def loop_stage(run: Run, args: argparse.Namespace) -> None:
    """main_group_vit.py's epoch loop on JPEG shards for ``--loop-steps`` iterations (one epoch, no evaluation)."""
    from datasets.builder import loader_workers

    device, batch = run.device, args.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(tmp) / "shards"
        shards.mkdir()
        workers = loader_workers(-1)
        per_shard = max(4, min(64, batch // 2))
        pattern = write_shards(shards, per_shard * max(workers, 2), per_shard=per_shard)
        config = {"_base_": [str(ROOT / "configs" / "default.yml"), str(Path(args.cfg).resolve())] if
                  "train" not in load_config(args.cfg) else str(Path(args.cfg).resolve()),
                  "data": {"batch_size": batch, "num_workers": -1, "uint8_images": True, "shuffle_buffer": 100,
                           "pin_memory": device.type == "cuda",
                           "dataset": {"meta": {"bench": {"type": "img_txt_pair", "path": str(shards),
                                                          "prefix": pattern, "length": batch * args.loop_steps}},
                                       "train": ["bench"]}},
                  "train": {"epochs": 1, "warmup_epochs": 0, "amp": args.loop_amp},
                  "evaluate": {"task": []}, "checkpoint": {"auto_resume": False},
                  "print_freq": max(1, args.loop_steps // 3)}
        (Path(tmp) / "loop.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        with batch_clock(device) as stamps:
            main_group_vit.main(["--cfg", str(Path(tmp) / "loop.yml"), "--output", str(Path(tmp) / "out"),
                                 *(["--opts", *args.opts] if args.opts else [])])
    skip = min(args.warmup, len(stamps) - 2)
    seconds = stamps[-1] - stamps[skip]
    iterations = len(stamps) - 1 - skip
    rate = batch * iterations / seconds
    run.results["loop"] = {"images_per_s": rate, "ms_per_iteration": 1000 * seconds / iterations,
                           "iterations": iterations, "workers": workers, "amp": args.loop_amp}
    run.loop_table.add(f"main_group_vit.py {args.loop_amp}", rate, 1000 * seconds / iterations, iterations, workers)
    run.results.setdefault("notes", []).append(
        f"real loop: main_group_vit.py on {per_shard * max(workers, 2)} JPEGs (short side 512) cycled, batch {batch}, "
        f"{workers} loader workers, uint8 images; the first {skip} iterations untimed")


def seg_stage(run: Run, cfg) -> None:
    from mmseg.structures import SegDataSample

    device = run.device
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device).eval()
    seg_cfg = load_seg_config(ROOT / "segmentation/configs/_base_/datasets/pascal_voc12.py")
    ours = build_segmentor(model, list(VOC_CLASSES), seg_cfg)
    ours.keep_seg_logits = False  # as evaluate_seg runs it
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
    batches = make_batches(args, cfg, device)
    lengths = sorted({b["text_lengths"] for b in batches})
    run.results["notes"] = [
        f"{Path(args.cfg).name}, batch {args.batch_size}, {cfg.data.img_aug.img_size} px, text "
        f"[B, {1 + cfg.data.text_aug.multi_label}, 77]; {len(batches)} batches in turn, text tower lengths "
        f"(captions, prompts) {lengths}",
        f"training: the training step on batches already on the device (no data loading); 'synced' = median of "
        f"{args.steps} steps each followed by a sync, 'chained' = the better of 2 runs of {args.chain} steps with one "
        f"sync (images/s from it); {args.warmup} warmup steps"]
    if args.profile_steps:
        run.stage("profile", 40, lambda: profile_stage(run, cfg, batches))
    run.stage("FLOP count", 20, lambda: run.results.update(
        flops_per_image=flops_per_image(build_model(cfg.model).to(device), batches[1 % len(batches)])))
    flops = run.results.get("flops_per_image", 0.0)
    run.results["notes"].append(f"{flops / 1e9:.1f} GFLOP per image per training step (batch 2 of the turn)")
    run.save()
    print(run.train_table.header(), flush=True)
    eager = [v for v in args.variants if "+" not in v]
    for variant in eager:
        run.stage(f"training {variant}", 30, lambda v=variant: train_variant(run, cfg, v, batches, flops))
    if args.seg_images > 0:
        print(run.seg_table.header(), flush=True)
        run.stage("segmentation", 40, lambda: seg_stage(run, cfg))
    if args.loop_steps > 0:
        run.stage("real loop", 90, lambda: loop_stage(run, args))
    staged = [v for v in args.variants if "+" in v and (device.type == "cuda" or "+graph" not in v)]
    for variant in staged:  # last: compiling takes the longest
        run.stage(f"training {variant}", 150, lambda v=variant: train_variant(run, cfg, v, batches, flops))
    if args.agreement_steps and staged:
        run.stage("agreement", 120, lambda: agreement_stage(run, cfg, batches, staged))
    print(f"results in {run.out}/results.json and {run.out}/RESULTS.md ({run.results['elapsed_s']} s)")
    return run.results


if __name__ == "__main__":
    main()
