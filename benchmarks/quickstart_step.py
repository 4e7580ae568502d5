"""Where the quickstart's training time goes on this CPU: its step against the cores' sgemm peak, in isolation and
in the real loop, and its loader.

    python benchmarks/quickstart_step.py --data-dir local_data/synthetic

Needs the world that ``./quickstart.sh`` writes into ``--data-dir``. Each variant runs in its own process, in the
order A B A B ... (``--repeats``), and measures three things on the model and data of ``configs/quickstart.yml``:
- the step alone: ``train_step`` (forward, backward, clipping, AdamW) fed ``--batches`` real batches round-robin;
  GFLOP per step (``torch.utils.flop_counter``, forward and backward), the median step time, GFLOP/s and its share
  of the sgemm peak (a 1024^3 float32 matmul on the same threads);
- the step in the loop: ``training.train`` for ``--loop-steps`` steps with the quickstart's loader worker, no
  evaluation; the mean step time after the first (which waits for the shuffle buffer), and its GFLOP/s;
- the loader alone, in this process without workers: seconds per batch over one pass of the training set
  (decoding, augmentation, noun prompts, tokenization).
Variants: ``text_caches`` (the tokenizer's and the noun extractor's caches of repeated texts, as the project runs)
and ``no_text_caches`` (both bounds set to 0: every text cleaned, tagged and tokenized again). Appends a table to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from common import ROOT, Table, append_results, machine_description  # isort: skip  (puts the project on sys.path)

sys.path.insert(0, str(ROOT / "tools"))  # tools/ is not a package

import quickstart  # noqa: E402

VARIANTS = ("text_caches", "no_text_caches")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser("quickstart step profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=ROOT / "local_data" / "synthetic", help="the quickstart's world")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--steps", type=int, default=20, help="timed isolated steps per run (after 3 untimed)")
    p.add_argument("--batches", type=int, default=8, help="real batches fed round-robin to the isolated step")
    p.add_argument("--loop-steps", type=int, default=30, help="steps of the real loop per run")
    p.add_argument("--repeats", type=int, default=1, help="runs of each variant, interleaved")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)  # one run of one variant; prints JSON
    p.add_argument("--no-append", action="store_true", help="print only; do not append to RESULTS.md")
    return p.parse_args(argv)


def quickstart_config(args: argparse.Namespace, *opts: str):
    """configs/quickstart.yml on the world in --data-dir, as ``./quickstart.sh`` builds it."""
    if not (args.data_dir / "info.json").is_file():
        raise SystemExit(f"error: no quickstart world in {args.data_dir} (run ./quickstart.sh first)")
    info = json.loads((args.data_dir / "info.json").read_text())
    flags = ["--data-dir", str(args.data_dir), "--threads", str(args.threads)]
    return quickstart.run_config(quickstart.parse_args([*flags, *(["--opts", *opts] if opts else [])]), info)


def isolated_step(args: argparse.Namespace) -> dict[str, float]:
    """GFLOP and median seconds of ``train_step`` on real batches, and the sgemm peak."""
    from torch.utils.flop_counter import FlopCounterMode

    from datasets.builder import DeviceFeeder, DeviceImages, build_train_loader
    from models import build_model
    from training.precision import resolve_precision
    from training.run import scaled_train_config
    from training.step import train_step
    from utils.optimizer import build_optimizer

    cfg = quickstart_config(args, "data.num_workers=0")
    cpu = torch.device("cpu")
    feeder = DeviceFeeder(build_train_loader(cfg.data), cpu, DeviceImages(True, cfg.data.img_aug, cpu),
                          cfg.train.text_length_multiple)
    batches = [batch for batch, _ in zip(feeder, range(args.batches), strict=False)]
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    optimizer = build_optimizer(scaled_train_config(cfg, 1), model)
    precision = resolve_precision(cfg.train, cpu)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    with FlopCounterMode(display=False) as flops:
        out = model(**batches[0])
        sum(v for k, v in out.items() if k.endswith("loss")).backward()
    optimizer.zero_grad(set_to_none=True)
    times = []
    for i in range(3 + args.steps):
        start = time.perf_counter()
        train_step(model, batches[i % len(batches)], optimizer, scaler, precision, cfg.train.clip_grad)
        times.append(time.perf_counter() - start)
    return {"gflop": flops.get_total_flops() / 1e9, "step_s": statistics.median(times[3:]), "sgemm": sgemm_gflops()}


def sgemm_gflops() -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    times = []
    for _ in range(18):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * 1024**3 / statistics.median(times[3:]) / 1e9


def loop_step(args: argparse.Namespace) -> float:
    """Mean seconds per step of ``training.train`` (the quickstart's loader worker, no evaluation) after its first."""
    from training import train
    from utils.config import apply_opts

    with tempfile.TemporaryDirectory() as out:
        cfg = quickstart_config(args, f"output={out}", "train.epochs=1", "evaluate.task=[]", "print_freq=1")
        apply_opts(cfg, [f"data.dataset.meta.synthetic.length={args.loop_steps * cfg.data.batch_size}"])
        train(cfg, device=torch.device("cpu"))
        log = (Path(out) / "log.txt").read_text()
    times = [float(t) for t in re.findall(r"\]\s+eta \S+\s+lr \S+\s+time ([0-9.]+)", log)]
    return statistics.mean(times[1:])


def loader_seconds(args: argparse.Namespace) -> float:
    """Seconds per batch of one pass of the training loader, in this process (a worker process starts afresh each
    epoch, so the caches hold what one epoch repeats)."""
    from datasets.builder import build_train_loader

    loader = build_train_loader(quickstart_config(args, "data.num_workers=0").data)
    start, count = time.perf_counter(), sum(1 for _ in loader)
    return (time.perf_counter() - start) / count


def child(args: argparse.Namespace) -> dict[str, float]:
    import datasets.nouns
    import datasets.tokenizer

    torch.set_num_threads(args.threads)
    if args.child == "no_text_caches":
        datasets.tokenizer.ENCODE_CACHE = datasets.nouns.WORD_CACHE = 0
    return {**isolated_step(args), "loop_step_s": loop_step(args), "loader_s": loader_seconds(args)}


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return
    torch.set_num_threads(args.threads)
    machine = machine_description(torch.device("cpu"))
    print(machine, flush=True)
    runs: dict[str, list[dict]] = {name: [] for name in args.variants}
    for _ in range(args.repeats):
        for name in args.variants:
            command = [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv), "--child", name]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
    table = Table(["variant", "GFLOP/step", "step alone s", "GFLOP/s alone", "% of sgemm peak", "sgemm GFLOP/s",
                   "step in loop s", "GFLOP/s in loop", "% of peak in loop", "loader s/batch"], [])
    print(table.header(), flush=True)
    for name, results in runs.items():
        def median(key: str) -> float:
            return statistics.median(r[key] for r in results)  # noqa: B023 (used at once)

        gflop, alone, loop, peak = results[0]["gflop"], median("step_s"), median("loop_step_s"), median("sgemm")
        table.add(name, round(gflop, 1), round(alone, 3), round(gflop / alone, 1), round(100 * gflop / alone / peak),
                  round(peak), round(loop, 3), round(gflop / loop, 1), round(100 * gflop / loop / peak),
                  round(median("loader_s"), 3))
    if not args.no_append:
        notes = [f"{args.repeats} run(s) per variant; the loop's loader runs in one worker process beside the "
                 f"step's {args.threads} threads, as in ./quickstart.sh"]
        append_results("Quickstart step on this CPU: GFLOP/s against the sgemm peak", machine, [table], notes)


if __name__ == "__main__":
    main()
