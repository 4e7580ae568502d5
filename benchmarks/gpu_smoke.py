"""One-GPU smoke run of every CUDA path users take, each an ordinary command, in a few minutes; writes
report.json and report.md to the output folder after every check (a run cut short keeps what it has).

    python benchmarks/gpu_smoke.py --out-dir $OUT                 # on a machine with one GPU (about 5 minutes)
    python benchmarks/gpu_smoke.py --device cpu --out-dir /tmp/s  # dry run: the same commands on the CPU

Data: a small synthetic world (tools/make_synthetic_data.py: webdataset caption shards, a classification set, a
segmentation set in the VOC layout); model: configs/quickstart.yml's. Checks, in order:
- train-fp16 / train-bf16 / train-fp32: main_group_vit.py for --epochs epochs with train.amp=..., loader workers from
  the cores (data.num_workers=-1, forked after CUDA started), uint8 images; passes when every epoch logged 0
  non-finite steps and the checkpoint exists (fp16: with the grad scaler's state);
- resume-fp16: the fp16 run again from its epoch-0 checkpoint (fused AdamW and scaler state restored on the GPU):
  its last epoch's losses against the uninterrupted run's (on CUDA equal only to about 1e-3);
- eval-gpu / eval-cpu: --eval of the fp32 checkpoint on each device (the CPU one loads the GPU-saved checkpoint);
  top-1 within 1 point;
- seg-gpu / seg-cpu: main_seg.py on the segmentation set; mIoU within 0.1;
- demo-gpu / demo-cpu: demo/demo_seg.py on one image; the label pictures agree on >= 99 % of the pixels;
- torchrun: torchrun --nproc_per_node 1 main_group_vit.py for one epoch;
- compile: one epoch with train.compile=true (bf16).
--device cpu runs everything on the CPU (fp16 is skipped): a dry run that the commands and checks work.
An output folder with an earlier smoke run in it is refused (its training runs would be resumed, not rerun);
--overwrite replaces it when the new run ends.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's utils (no torch: this script only starts commands)

from utils.cli import run_cli  # noqa: E402
from utils.overwrite import add_overwrite_flag, refuse_to_overwrite, replacing  # noqa: E402

OUTPUTS = ("report.json", "report.md", "logs", "runs", "world")  # what a smoke run writes into --out-dir
CHECKS = ("train-fp16", "train-bf16", "train-fp32", "resume-fp16", "eval-gpu", "eval-cpu", "seg-gpu", "seg-cpu",
          "demo-gpu", "demo-cpu", "torchrun", "compile")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser("GroupViT one-GPU smoke run")
    parser.add_argument("--out-dir", default=os.environ.get("OUT") or "smoke_out")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--checks", nargs="+", default=list(CHECKS), choices=CHECKS)
    parser.add_argument("--train-samples", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=150, help="seconds per command")
    parser.add_argument("--time-budget", type=float, default=450, help="seconds; later checks are skipped after")
    add_overwrite_flag(parser, "an earlier smoke run in --out-dir")
    return parser.parse_args(argv)


class Smoke:
    """The checks run so far and the report files."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.start = args, time.perf_counter()
        self.out = Path(args.out_dir).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.report: dict = {"device": args.device, "checks": {}}

    def command(self, name: str, argv: list[str], cpu: bool = False) -> tuple[bool, str]:
        """Run one command (on the CPU with ``cpu``: no GPU visible), its output in ``<out>/logs/<name>.txt``."""
        env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if cpu or self.args.device == "cpu" else {})}
        logs = self.out / "logs"
        logs.mkdir(exist_ok=True)
        start = time.perf_counter()
        try:
            done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=self.args.timeout)
            ok, text = done.returncode == 0, done.stdout + done.stderr
        except subprocess.TimeoutExpired as e:  # (its output comes as bytes, whatever text=True says)
            output = b"".join(o if isinstance(o, bytes) else (o or "").encode() for o in (e.stdout, e.stderr))
            ok, text = False, f"{output.decode(errors='replace')}\ntimed out after {self.args.timeout} s"
        (logs / f"{name}.txt").write_text(f"$ {' '.join(argv)}\n{text}")
        self.report.setdefault("seconds", {})[name] = round(time.perf_counter() - start, 1)
        return ok, text

    def check(self, name: str, fn: Callable[[], dict]) -> None:
        """Record ``fn``'s result: a dict with 'passed' and what it measured; an exception fails the check."""
        if name not in self.args.checks:
            return
        left = self.args.time_budget - (time.perf_counter() - self.start)
        if left < 20:
            self.report["checks"][name] = {"passed": None, "note": f"skipped: {left:.0f} s of the budget left"}
        else:
            print(f"--- {name}", flush=True)
            try:
                self.report["checks"][name] = fn()
            except Exception as e:  # one failed check must not stop the others
                self.report["checks"][name] = {"passed": False, "error": f"{type(e).__name__}: {e}"}
        print(f"    {self.report['checks'][name]}", flush=True)
        self.save()

    def save(self) -> None:
        self.report["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        (self.out / "report.json").write_text(json.dumps(self.report, indent=2, default=str))
        lines = [f"# GPU smoke run ({self.args.device}, {self.report['elapsed_s']} s)", "",
                 "| check | passed | details |", "|---|---|---|"]
        for name, result in self.report["checks"].items():
            details = ", ".join(f"{k}={v}" for k, v in result.items() if k != "passed")
            lines.append(f"| {name} | {result['passed']} | {details[:300]} |")
        (self.out / "report.md").write_text("\n".join(lines) + "\n")


def epoch_lines(log: str) -> list[str]:
    return re.findall(r"EPOCH \d+ training takes .*", log)


def last_losses(log: str) -> dict[str, float]:
    """The running averages of the last 'Train:' line of a log (e.g. {'total_loss': 2.1, 'loss': ...})."""
    lines = [line for line in log.splitlines() if "Train: [" in line and "eta" in line]
    return {k: float(v) for k, v in re.findall(r"(\w*loss) [\d.]+ \(([\d.]+)\)", lines[-1])} if lines else {}


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    outputs = [Path(args.out_dir).resolve() / name for name in OUTPUTS]
    refuse_to_overwrite(outputs, "an earlier smoke run", args.overwrite)
    with replacing(outputs):
        return run_checks(args)


def run_checks(args: argparse.Namespace) -> dict:
    smoke = Smoke(args)
    python, world = sys.executable, smoke.out / "world"
    gpu = args.device == "cuda"
    ok, text = smoke.command("make-data", [python, "tools/make_synthetic_data.py", "--out", str(world),
                                           "--train-samples", str(args.train_samples), "--seg-images", "40",
                                           "--cls-images", "200", "--samples-per-shard", "256",
                                           "--workers", str(min(8, os.cpu_count() or 1))])
    if not ok:
        smoke.report["error"] = f"tools/make_synthetic_data.py failed: {text[-500:]}"
        smoke.save()
        raise SystemExit(smoke.report["error"])
    info = json.loads((world / "info.json").read_text())
    data = [f"data.dataset.meta.synthetic.path={world / 'train'}",
            f"data.dataset.meta.synthetic.prefix='{info['train']['prefix']}'",
            f"data.dataset.meta.synthetic.length={info['train']['length']}",
            f"data.dataset.meta.synthetic_cls.path={world / 'cls'}",
            f"data.dataset.meta.synthetic_cls.prefix='{info['cls']['prefix']}'",
            f"data.dataset.meta.synthetic_cls.length={info['cls']['length']}",
            f"evaluate.cls.classnames={world / 'cls' / 'classnames.txt'}",
            f"evaluate.seg.opts=[data_root={world / 'seg'}]"]
    loop = [f"data.batch_size={args.batch_size}", "data.num_workers=-1", "data.uint8_images=true",
            f"data.pin_memory={str(gpu).lower()}", "evaluate.task=[cls]", "print_freq=5"]
    cfg = ["--cfg", "configs/quickstart.yml"]
    runs = smoke.out / "runs"

    def train(name: str, amp: str, epochs: int, *extra: str, launcher: Sequence[str] = (python,)) -> dict:
        ok, log = smoke.command(name, [*launcher, "main_group_vit.py", *cfg, "--output", str(runs / name),
                                       "--opts", *data, *loop, f"train.amp={amp}", f"train.epochs={epochs}", *extra])
        epochs_logged = epoch_lines(log)
        clean = bool(epochs_logged) and all(line.endswith(" 0 non-finite steps") for line in epochs_logged)
        result = {"passed": ok and clean and (runs / name / "checkpoint.pth").is_file(), "epochs": epochs_logged,
                  "losses": last_losses(log)}
        if ok and amp == "fp16":
            import torch

            ckpt = torch.load(runs / name / "checkpoint.pth", map_location="cpu", weights_only=True)
            result["scaler_scale"] = ckpt.get("scaler", {}).get("scale")
            result["passed"] = result["passed"] and result["scaler_scale"] is not None
        return result

    amps = ["fp16", "bf16", "fp32"] if gpu else ["bf16", "fp32"]
    for amp in ("fp16", "bf16", "fp32"):
        if amp in amps:
            smoke.check(f"train-{amp}", lambda a=amp: train(f"train-{a}", a, args.epochs))
        elif f"train-{amp}" in args.checks:
            smoke.report["checks"][f"train-{amp}"] = {"passed": None, "note": "CUDA only"}

    def resume() -> dict:
        first = runs / "train-fp16" / "ckpt_epoch_0.pth"
        if not first.is_file():
            return {"passed": None, "note": "no fp16 run to resume (train-fp16 skipped or failed)"}
        result = train("resume-fp16", "fp16", args.epochs, f"checkpoint.resume={first}")
        log = (smoke.out / "logs" / "resume-fp16.txt").read_text()
        uninterrupted = smoke.report["checks"]["train-fp16"]["losses"]
        gap = max((abs(result["losses"][k] - v) for k, v in uninterrupted.items() if k in result["losses"]),
                  default=float("nan"))
        result.update(resumed="resumed from" in log, largest_loss_gap=gap)
        result["passed"] = result["passed"] and result["resumed"] and gap <= 1e-2
        return result

    smoke.check("resume-fp16", resume if gpu else lambda: {"passed": None, "note": "CUDA only (fp16)"})

    ckpt = runs / "train-fp32" / "checkpoint.pth"

    def evaluate(device: str) -> dict:
        ok, log = smoke.command(f"eval-{device}", [python, "main_group_vit.py", *cfg, "--eval", "--resume", str(ckpt),
                                                   "--output", str(runs / f"eval-{device}"), "--opts", *data,
                                                   "data.uint8_images=true"], cpu=device == "cpu")
        found = re.search(r"top-1 ([\d.]+)%", log)
        return {"passed": ok and found is not None, "acc1": float(found[1]) if found else None}

    smoke.check("eval-gpu", lambda: evaluate("gpu"))

    def agree(name: str, key: str, tolerance: float, measure: Callable[[], dict]) -> dict:
        result = measure()
        reference = smoke.report["checks"].get(name.replace("cpu", "gpu"), {}).get(key)
        result["difference"] = abs(result[key] - reference) if None not in (result[key], reference) else None
        result["passed"] = result["passed"] and result["difference"] is not None and result["difference"] <= tolerance
        return result

    smoke.check("eval-cpu", lambda: agree("eval-cpu", "acc1", 1.0, lambda: evaluate("cpu")))

    def segment(device: str) -> dict:
        out = runs / f"seg-{device}"
        ok, _ = smoke.command(f"seg-{device}", [python, "main_seg.py", *cfg, "--resume", str(ckpt), "--output",
                                                str(out), "--opts", *data], cpu=device == "cpu")
        miou = json.loads((out / "seg_results.json").read_text())["mIoU"] if ok else None
        return {"passed": ok and miou is not None, "miou": miou}

    smoke.check("seg-gpu", lambda: segment("gpu"))
    smoke.check("seg-cpu", lambda: agree("seg-cpu", "miou", 0.1, lambda: segment("cpu")))

    image = next(iter(sorted((world / "seg" / "JPEGImages").glob("*.jpg"))), None)

    def demo(device: str) -> dict:
        out = runs / f"demo-{device}"
        ok, _ = smoke.command(f"demo-{device}", [python, "demo/demo_seg.py", *cfg, "--resume", str(ckpt), "--input",
                                                 str(image), "--vis", "input_pred_label", "--output_dir", str(out),
                                                 "--device", "cuda" if device == "gpu" and gpu else "cpu"])
        pictures = sorted(out.glob("vis_imgs/**/*.png"))
        return {"passed": ok and bool(pictures), "pictures": [str(p.relative_to(out)) for p in pictures]}

    def demo_agreement() -> dict:
        import numpy as np
        from PIL import Image

        result = demo("cpu")
        gpu_pictures = sorted((runs / "demo-gpu").glob("vis_imgs/**/*.png"))
        cpu_pictures = sorted((runs / "demo-cpu").glob("vis_imgs/**/*.png"))
        if not (gpu_pictures and cpu_pictures):
            return {**result, "passed": False, "note": "pictures missing"}
        a, b = (np.asarray(Image.open(p[0]).convert("RGB")) for p in (gpu_pictures, cpu_pictures))
        result["same_pixels"] = float((a == b).all(axis=-1).mean()) if a.shape == b.shape else 0.0
        result["passed"] = result["passed"] and result["same_pixels"] >= 0.99
        return result

    smoke.check("demo-gpu", lambda: demo("gpu"))
    smoke.check("demo-cpu", demo_agreement)
    torchrun = [python, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--standalone"]
    smoke.check("torchrun", lambda: train("torchrun", "bf16", 1, launcher=torchrun))
    smoke.check("compile", lambda: train("compile", "bf16", 1, "train.compile=true"))
    passed = [r["passed"] for r in smoke.report["checks"].values()]
    smoke.report["summary"] = f"{passed.count(True)} passed, {passed.count(False)} failed, {passed.count(None)} skipped"
    smoke.save()
    print(f"{smoke.report['summary']}; report in {smoke.out}/report.md", flush=True)
    return smoke.report


if __name__ == "__main__":
    run_cli(main)
