"""Shared pieces of the benchmark scripts: machine description, interleaved timing, peak memory, benchmark inputs,
tables and the ``benchmarks/RESULTS.md`` appender.

Timing rule: variants are compared in the same process on the same inputs, interleaved (every repetition runs each
variant once, in a rotating order), after untimed warmup calls; a result is the median over the repetitions, and the
spread (max - min) / median says how noisy the machine was.
"""

from __future__ import annotations

import datetime
import os
import platform
import random
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # scripts run as `python benchmarks/x.py`: make the project importable
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
NOUNS = ("dog", "cat", "car", "tree", "beach", "man", "woman", "child", "street", "house", "boat", "bird", "flower",
         "mountain", "table", "food", "horse", "bicycle", "city", "sky", "river", "train", "chair", "phone")


# --------------------------------------------------------------------------------------------- machine


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(device: torch.device | None = None) -> str:
    """One line: the CPU (cores, torch threads) or GPU, torch version and load average at the start."""
    parts = [f"{cpu_name()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"]
    if device is not None and device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        parts.insert(0, f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}")
    parts.append(f"torch {torch.__version__}, Python {platform.python_version()}")
    if hasattr(os, "getloadavg"):
        parts.append(f"load average {os.getloadavg()[0]:.1f} at start")
    return "; ".join(parts)


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads`` when given. On a shared CPU one thread is the stable choice: with more threads than
    free cores, every parallel region waits for a descheduled thread and timings get several times slower."""
    if threads:
        torch.set_num_threads(threads)


def bf16_supported(device: torch.device) -> bool:
    """bfloat16 autocast is worth timing: a GPU with bf16, or a CPU with native bf16 (AVX512-BF16 / AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(device: torch.device, precision: str):
    """Autocast context for 'fp32' (off), 'bf16' or 'fp16'."""
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


# --------------------------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Seconds per call of one variant over the repetitions: wall clock, and the process's CPU time.

    On a CPU shared with other jobs, a one-thread process's CPU time barely moves when the scheduler gives its core
    away for a while; its wall time does. ``basis`` says which one ``median``, ``spread`` and the rates use.
    """

    wall: list[float]
    cpu: list[float]
    basis: str = "wall"

    @property
    def seconds(self) -> list[float]:
        return self.cpu if self.basis == "cpu" else self.wall

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """(max - min) / median of the repetitions."""
        return (max(self.seconds) - min(self.seconds)) / self.median

    def rate(self, items: int) -> float:
        """Items per second at the median time."""
        return items / self.median

    def wall_rate(self, items: int) -> float:
        return items / statistics.median(self.wall)


BASIS_NOTE = {
    "cpu": "images/s = images per second of the process's CPU time (one thread: what an otherwise idle core does; "
           "the shared machine's wall clock is in 'wall images/s'); ratios and spread use the CPU time",
    "wall": "images/s = wall clock (several threads or a GPU); ratios and spread use the wall clock",
}


def timing_basis(device: torch.device) -> str:
    """'cpu' (process CPU time) for a one-thread CPU run, else 'wall'."""
    return "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(variants: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1,
                     device: torch.device | None = None, min_seconds: float = 0.5) -> dict[str, Timing]:
    """Time each variant ``repeats`` times, interleaved in a rotating order, after ``warmup`` untimed calls each.

    A repetition of a fast variant runs it several times (as many as the warmup says fill ``min_seconds``) and
    records the mean, so that short calls are not dominated by timer and scheduling noise.
    """
    device = device or torch.device("cpu")
    names = list(variants)
    calls = dict.fromkeys(names, 1)
    for name in names:
        start = time.perf_counter()
        for _ in range(warmup):
            variants[name]()
        synchronize(device)
        if warmup:
            calls[name] = max(1, int(min_seconds * warmup / max(time.perf_counter() - start, 1e-6)))
    timings = {name: Timing([], [], timing_basis(device)) for name in names}
    for rep in range(repeats):
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(calls[name]):
                variants[name]()
            synchronize(device)
            timings[name].cpu.append((time.process_time() - cpu) / calls[name])
            timings[name].wall.append((time.perf_counter() - wall) / calls[name])
    return timings


def peak_memory_mib(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak memory of the tensors one call of ``fn`` allocates, in MiB, above what was allocated before it.

    CUDA: ``max_memory_allocated``. CPU: the running maximum of the allocator's allocations and frees recorded by
    the profiler (the CPU allocator has no peak counter). None when the profiler does not expose the sizes.
    """
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                        if e.name() == "[memory]")
    except AttributeError:
        return None
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak / 2**20


# --------------------------------------------------------------------------------------------- inputs


def caption_tokens(batch: int, generator: torch.Generator, lengths: tuple[int, int] = (5, 40),
                   context: int = 77) -> torch.Tensor:
    """[batch, 77] ids: SOT, ``lengths`` (inclusive range, uniform) random BPE ids, EOT, zero padding.

    Captions of the pretraining sets are mostly short (CC3M averages about 10 words); a length above 75 is cut to
    77 tokens with EOT last, as the tokenizer does.
    """
    tokens = torch.zeros(batch, context, dtype=torch.long)
    for row in range(batch):
        n = min(int(torch.randint(lengths[0], lengths[1] + 1, (1,), generator=generator)), context - 2)
        tokens[row, 0] = 49406
        tokens[row, 1:n + 1] = torch.randint(1, 49406, (n,), generator=generator)
        tokens[row, n + 1] = 49407
    return tokens


def text_batch(batch: int, multi_label: int, seed: int = 0, lengths: tuple[int, int] = (5, 40)) -> torch.Tensor:
    """[B, 77] captions, or [B, 1 + M, 77]: the caption and M noun prompts made as the multi-label augmentation
    makes them (a random one of the 80 CLIP templates around a noun), tokenized by the project's tokenizer."""
    from datasets import Tokenize, template_meta

    generator = torch.Generator().manual_seed(seed)
    captions = caption_tokens(batch, generator, lengths)
    if multi_label == 0:
        return captions
    rng = random.Random(seed)
    templates, tokenize = template_meta["full"], Tokenize()
    prompts = tokenize([rng.choice(templates).format(rng.choice(NOUNS)) for _ in range(batch * multi_label)])
    return torch.cat([captions[:, None], prompts.view(batch, multi_label, -1)], dim=1)


# --------------------------------------------------------------------------------------------- tables


@dataclass
class Table:
    """Rows of named columns, printed as aligned text and written as Markdown."""

    columns: Sequence[str]
    rows: list[list[str]]

    def add(self, *values: object) -> None:
        self.rows.append([fmt(v) for v in values])
        print("  ".join(v.rjust(w) for v, w in zip(self.rows[-1], self.widths(), strict=True)), flush=True)

    def widths(self) -> list[int]:
        return [max(len(c), 12) for c in self.columns]

    def header(self) -> str:
        return "  ".join(c.rjust(w) for c, w in zip(self.columns, self.widths(), strict=True))

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


def fmt(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def append_results(title: str, machine: str, tables: Sequence[Table], notes: Sequence[str] = (),
                   path: Path = RESULTS, quiet: bool = False) -> None:
    """Append a dated section (command line, machine, tables, notes) to ``path`` (``benchmarks/RESULTS.md``)."""
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    text = [f"\n## {title} ({stamp})\n", f"`{command}`\n", f"Machine: {machine}\n"]
    text += [table.markdown() + "\n" for table in tables]
    text += [f"- {note}" for note in notes]
    if not path.exists():
        path.write_text("# Benchmark results\n\nAppended by the scripts in `benchmarks/` (newest last).\n")
    with path.open("a") as f:
        f.write("\n".join(text) + "\n")
    if not quiet:
        print(f"appended to {path}")


def full_config(cfg_path: str | Path):
    """The config, over configs/default.yml when it has no training section (e.g. tests/golden/tiny_model.yml)."""
    from omegaconf import OmegaConf

    from utils.config import load_config

    cfg = load_config(cfg_path)
    return cfg if "train" in cfg else OmegaConf.merge(load_config(ROOT / "configs" / "default.yml"), cfg)


def default_cfgs() -> list[str]:
    """The full yfcc model and a small one: configs/quickstart.yml when it exists, else the golden tiny model."""
    small = ROOT / "configs" / "quickstart.yml"
    if not small.exists():
        small = ROOT / "tests" / "golden" / "tiny_model.yml"
    return [str(ROOT / "configs" / "group_vit_gcc_yfcc_30e.yml"), str(small)]
