"""The main command: train a small GroupViT from captions alone on a CPU (200 steps by default), and evaluate it.

    ./quickstart.sh                                   # = .venv/bin/python tools/quickstart.py
    ./quickstart.sh --epochs 30 --train-samples 60000 # longer
    ./quickstart.sh --device cuda --batch-size 256    # on a GPU

Steps: generate the synthetic world (--world, datasets/synthetic/; skipped when ``<data-dir>/info.json`` already
describes the same data), evaluate the untrained model, train a small GroupViT (configs/quickstart.yml) with the
project's own engine (``training.train``, in this process; zero-shot segmentation and classification after every
epoch), then evaluate the trained model on the held-out segmentation set (segmentation/evaluation) and the
classification set, write pictures (segmentation/vis.py) and a loss/mIoU curve, and print a summary.

Everything goes to ``--output`` (default output/quickstart): ``quickstart_results.json`` (every number, every
path), ``quickstart_config.yml`` (the run's config), ``train/`` (checkpoint, log.txt, TensorBoard),
``predictions/{trained,untrained}/*.png`` (label maps, pixel = class index), ``cls_predictions.json``,
``pictures/`` and ``curves.png``. One run at a time per ``--output`` (its run lock); an earlier run there is
refused unless ``--resume CHECKPOINT`` continues it (the command an interrupted run prints) or ``--overwrite``
replaces it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tools/ is not a package

import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from PIL import Image  # noqa: E402

from datasets.synthetic import DEFAULT_WORLD, WORLDS, WorldSpec  # noqa: E402
from training.state import History  # noqa: E402
from utils.cli import add_debug_flag, run_cli  # noqa: E402
from utils.config import apply_opts, get_config, load_config  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.logger import get_logger  # noqa: E402
from utils.overwrite import add_overwrite_flag  # noqa: E402
from utils.run_lock import hold_run_lock  # noqa: E402

DEFAULT_CFG = ROOT / "configs" / "quickstart.yml"
SEG_CFG = ROOT / "segmentation" / "configs" / "_base_" / "datasets" / "synthetic.py"
PICTURE_MODES = ("input_pred_label", "final_group")
PICTURE_SIDE = 256  # pictures are upscaled (nearest) to at least this many pixels, so the class names fit
# What a run writes into --output (beside log.txt, which every run appends to, and the run lock).
RUN_FILES = ("train", "predictions", "pictures", "quickstart_config.yml", "quickstart_results.json",
             "cls_predictions.json", "curves.json", "curves.png")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--train-samples", type=int, default=12800, help="image-caption pairs to generate")
    p.add_argument("--seg-images", type=int, default=500, help="held-out segmentation images")
    p.add_argument("--cls-images", type=int, default=1000, help="classification images")
    p.add_argument("--epochs", type=int, help="training epochs (default: train.epochs of --cfg)")
    p.add_argument("--batch-size", type=int, help="images per step (default: data.batch_size of --cfg)")
    p.add_argument("--output", type=Path, default=ROOT / "output" / "quickstart", help="output folder")
    p.add_argument("--data-dir", type=Path, default=ROOT / "local_data" / "synthetic", help="synthetic data folder")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes generating the data")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (CPU)")
    p.add_argument("--seed", type=int, default=0, help="world seed and training seed")
    p.add_argument("--world", default=DEFAULT_WORLD, choices=sorted(WORLDS),
                   help="the synthetic world (datasets/synthetic/spec.py's WORLDS)")
    p.add_argument("--cfg", type=Path, default=DEFAULT_CFG, help="experiment config")
    p.add_argument("--opts", nargs="+", default=[], help="config overrides, key=value (e.g. train.base_lr=0.02)")
    p.add_argument("--skip-data", action="store_true", help="use the data in --data-dir as it is")
    p.add_argument("--pictures", type=int, default=6, help="held-out images to draw")
    p.add_argument("--resume", type=Path, metavar="CHECKPOINT",
                   help="continue the run in --output from this checkpoint (the one an interrupted run names)")
    add_overwrite_flag(p, "an earlier run in --output (deleted before this one starts) and another world in "
                          "--data-dir")
    add_debug_flag(p)
    args = p.parse_args(argv)
    if min(args.train_samples, args.seg_images, args.cls_images, args.workers, args.threads) < 1:
        raise UserError("--train-samples, --seg-images, --cls-images, --workers and --threads must be at least 1")
    if args.pictures < 0 or args.seed < 0:
        raise UserError("--pictures and --seed must not be negative")
    if args.resume and args.overwrite:
        raise UserError("--resume continues the run in --output, --overwrite replaces it: give one of them")
    if args.resume and not args.resume.is_file():
        raise UserError(f"--resume: {args.resume} is not a file")
    return args


# --------------------------------------------------------------------------------------------- timing


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (data generators, loader workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Timer:
    """Wall and CPU seconds per phase."""

    def __init__(self) -> None:
        self.phases: dict[str, dict[str, float]] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), cpu_seconds()
        yield
        self.phases[name] = {"wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(cpu_seconds() - cpu, 1)}


# --------------------------------------------------------------------------------------------- output


def claim_output(args: argparse.Namespace) -> None:
    """Make --output this run's: an earlier run there is continued (--resume), removed (--overwrite) or refused."""
    earlier = [args.output / name for name in RUN_FILES if (args.output / name).exists()]
    if not earlier or args.resume:
        return
    if not args.overwrite:
        checkpoint = args.output / "train" / "checkpoint.pth"
        resume = f"--resume {checkpoint} to continue it, " if checkpoint.is_file() else ""
        raise UserError(f"{args.output} holds an earlier run ({', '.join(p.name for p in earlier)}); pass {resume}"
                        "--overwrite to replace it, or choose another --output")
    for path in earlier:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


# --------------------------------------------------------------------------------------------- data


def world_spec(args: argparse.Namespace, image_size: int) -> WorldSpec:
    """The --world's spec at the config's image size (data.img_aug.img_size)."""
    return replace(WORLDS[args.world], image_size=image_size)


def ensure_data(args: argparse.Namespace, image_size: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The synthetic world in ``--data-dir`` (generated unless its info.json already matches); its info dict."""
    from datasets.synthetic import write_world

    info_path = args.data_dir / "info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else None
    if args.skip_data:
        if info is None:
            raise UserError(f"--skip-data: {info_path} does not exist (run once without --skip-data)")
        log(f"data: using {args.data_dir} as it is (--skip-data)")
        return info
    spec = world_spec(args, image_size)
    wanted = {"world": args.world, "spec": json.loads(json.dumps(spec.to_json())), "seed": args.seed,
              "train": args.train_samples, "seg": args.seg_images, "cls": args.cls_images}
    if info is not None and describe(info) == wanted:
        log(f"data: {args.data_dir} already holds this world ({args.world}, seed {args.seed}); not regenerated")
        return info
    if info is not None and not args.overwrite:  # another world: a user's, or an earlier run's with other settings
        raise UserError(f"{args.data_dir} holds another world ({describe(info)['world']}, seed {info.get('seed')}): "
                        "refusing to regenerate it; pass --overwrite to replace it, or choose another --data-dir")
    log(f"data: generating world {args.world} (seed {args.seed}, {image_size} px, {args.train_samples} pairs, "
        f"{args.seg_images} held-out, {args.cls_images} cls) into {args.data_dir} with {args.workers} processes")
    return write_world(args.data_dir, spec, args.seed, args.train_samples, args.seg_images, args.cls_images,
                       world=args.world, workers=args.workers, progress=True)


def describe(info: dict[str, Any]) -> dict[str, Any]:
    """The parameters a world's info.json records (what decides whether it must be regenerated)."""
    sizes = {k: (info.get(k) or {}).get("length" if k != "seg" else "num_images") for k in ("train", "seg", "cls")}
    return {"world": info.get("world"), "spec": info.get("spec"), "seed": info.get("seed"), **sizes}


# --------------------------------------------------------------------------------------------- config


def run_config(args: argparse.Namespace, info: dict[str, Any] | None) -> DictConfig:
    """--cfg with the command-line settings, the data paths of ``info`` and --opts (applied last)."""
    cfg = load_config(args.cfg)
    OmegaConf.set_struct(cfg, True)
    opts = [f"seed={args.seed}", f"train.seed={args.seed}", f"evaluate.seg.cfg={SEG_CFG}"]
    if args.resume:
        opts.append(f"checkpoint.resume={args.resume.resolve()}")
    if args.epochs is not None:
        opts.append(f"train.epochs={args.epochs}")
    if args.batch_size is not None:
        opts.append(f"data.batch_size={args.batch_size}")
    if info is not None:  # folders from --data-dir (info.json may hold paths relative to another directory)
        train, cls = info["train"], info["cls"]
        opts += [f"data.dataset.meta.synthetic.path={args.data_dir / 'train'}",
                 f"data.dataset.meta.synthetic.prefix='{train['prefix']}'",
                 f"data.dataset.meta.synthetic.length={train['length']}",
                 f"data.dataset.meta.synthetic_cls.path={args.data_dir / 'cls'}",
                 f"data.dataset.meta.synthetic_cls.prefix='{cls['prefix']}'",
                 f"data.dataset.meta.synthetic_cls.length={cls['length']}",
                 f"evaluate.cls.classnames={args.data_dir / 'cls' / 'classnames.txt'}"]
    apply_opts(cfg, opts)
    if info is not None:
        seg_opts = [*cfg.evaluate.seg.opts, f"data_root={args.data_dir / 'seg'}"]
        apply_opts(cfg, [f"evaluate.seg.opts=[{','.join(seg_opts)}]"])
    return apply_opts(cfg, args.opts)


def save_config(cfg: DictConfig, path: Path) -> None:
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("_base_", None)  # the written file stands alone
    OmegaConf.save(OmegaConf.create(container), path)


def select_device(name: str) -> torch.device:
    """Make ``name`` the device the training engine picks (it takes CUDA when visible): must run before CUDA starts."""
    device = torch.device(name)
    if device.type == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif device.type == "cuda":
        if device.index is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(device.index)
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available here")
        device = torch.device("cuda", 0)
    else:
        raise UserError(f"--device must be cpu, cuda or cuda:N, not {name!r}")
    return device


# --------------------------------------------------------------------------------------------- evaluation


def evaluate_seg_to(cfg: DictConfig, model: torch.nn.Module, out_dir: Path, logger) -> dict[str, Any]:
    """mIoU etc. of ``model`` on the held-out set; writes every label map to ``out_dir/pred/<name>.png``."""
    from segmentation.evaluation import evaluate_seg

    shutil.rmtree(out_dir, ignore_errors=True)
    return evaluate_seg(cfg, model, logger, ["pred"], out_dir).to_json()


def evaluate_cls(cfg: DictConfig, model: torch.nn.Module, device: torch.device) -> dict[str, Any]:
    """Zero-shot classification of every image of the cls set in float32 (``training.zero_shot_cls.evaluate_cls``, as
    training runs it), keeping the class names and each image's target and top-5 predictions."""
    from datasets.builder import build_val_loader
    from training.precision import FP32
    from training.zero_shot_cls import evaluate_cls

    return evaluate_cls(cfg, model, build_val_loader(cfg.data), FP32, device,
                        keep_predictions=True)


def chance_miou(seg_root: Path) -> dict[str, float]:
    """Two label-free baselines from the ground truth of the held-out set (mIoU x100, background included):

    - all_background: every pixel predicted background (IoU = background share; 0 for every present class);
    - uniform_random: every pixel an independent uniform draw among the C classes; expected IoU of class c with
      n_c of N pixels is (n_c / C) / (n_c + N / C - n_c / C).
    Classes absent from the ground truth are left out, as mmseg's mIoU leaves them out when nothing predicts them.
    """
    classes = (seg_root / "classes.txt").read_text().split()
    counts = np.zeros(len(classes), np.int64)
    for name in (seg_root / "ImageSets" / "Segmentation" / "val.txt").read_text().split():
        mask = np.asarray(Image.open(seg_root / "SegmentationClass" / f"{name}.png"))
        counts += np.bincount(mask.ravel(), minlength=len(classes))
    present = counts > 0
    total, n_cls = counts.sum(), len(classes)
    all_bg = np.where(np.arange(n_cls) == 0, counts[0] / total, 0.0)
    uniform = (counts / n_cls) / (counts + total / n_cls - counts / n_cls)
    return {"all_background": round(100 * float(all_bg[present].mean()), 2),
            "uniform_random": round(100 * float(uniform[present].mean()), 2)}


@torch.no_grad()
def grouping_report(cfg: DictConfig, model: torch.nn.Module, seg_root: Path) -> dict[str, Any]:
    """segmentation/evaluation/diagnostics.py on the held-out set: group oracles (soft and hard chain), groups per
    image, stage-0 soft max-probability and label agreement, with the world's patch-grid bound beside them."""
    from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from segmentation.evaluation import build_segmentor, load_eval_seg_config
    from segmentation.evaluation.diagnostics import grouping_diagnostics, patch_grid_bound

    seg_cfg, _ = load_eval_seg_config(cfg.evaluate.seg)
    classes = (seg_root / "classes.txt").read_text().split()
    segmentor = build_segmentor(model.eval(), classes, seg_cfg, template=cfg.evaluate.seg.template)
    names = (seg_root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    images = np.stack([np.asarray(Image.open(seg_root / "JPEGImages" / f"{n}.jpg").convert("RGB")) for n in names])
    masks = torch.from_numpy(np.stack([np.asarray(Image.open(seg_root / "SegmentationClass" / f"{n}.png"))
                                       for n in names]))  # [N, H, W]
    mean, std = (255 * torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD))
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() - mean) / std  # [N, 3, H, W]
    report = grouping_diagnostics(segmentor, x, masks, thresholds=[segmentor.bg_thresh])
    report.pop("miou_by_bg")
    report["bound"] = round(patch_grid_bound(masks, cfg.model.img_encoder.patch_size, len(classes)), 2)
    return report


# --------------------------------------------------------------------------------------------- pictures


@torch.no_grad()
def draw_pictures(cfg: DictConfig, model: torch.nn.Module, seg_root: Path, out_dir: Path, count: int) -> list[Path]:
    """``PICTURE_MODES`` of the first ``count`` held-out images (segmentation/vis.py), upscaled for legibility,
    plus ``overview.png``: one row per image with the input, the ground truth, the prediction and the groups."""
    from segmentation.evaluation import build_seg_dataset, build_segmentor, load_eval_seg_config
    from segmentation.image_files import read_image
    from segmentation.inference import segment_image
    from segmentation.vis import sample_layers, save_vis, upscale

    shutil.rmtree(out_dir, ignore_errors=True)
    seg_cfg, _ = load_eval_seg_config(cfg.evaluate.seg)
    dataset = build_seg_dataset(seg_cfg)
    seg_model = build_segmentor(model.eval(), dataset, seg_cfg, template=cfg.evaluate.seg.template)
    palette = np.asarray(seg_model.palette, np.uint8)
    written, rows = [], []
    for name in (seg_root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:count]:
        inputs, sample = segment_image(seg_model, read_image(seg_root / "JPEGImages" / f"{name}.jpg"))
        image, label, group_maps = sample_layers(seg_model, inputs, sample, PICTURE_MODES)
        scale = max(1, -(-PICTURE_SIDE // min(image.shape[:2])))
        files = save_vis(out_dir, name, PICTURE_MODES, upscale(image, scale), upscale(label, scale),
                         seg_model.classes, seg_model.palette, seg_model.with_bg, group_maps)
        truth = np.asarray(Image.open(seg_root / "SegmentationClass" / f"{name}.png"))
        panels = [upscale(image, scale), palette[upscale(truth, scale)], *(np.asarray(Image.open(f)) for f in files)]
        rows.append(np.concatenate([panel[..., :3] for panel in panels], axis=1))
        written += files
    if rows:
        overview = out_dir / "overview.png"
        Image.fromarray(np.concatenate(rows, axis=0)).save(overview)
        written.append(overview)
    return written


def plot_curves(curves: dict[str, Any], path: Path) -> None:
    """Loss per iteration (left) and mIoU / top-1 over the minutes since the command started (right: the untrained
    model, then each epoch's end; chance dashed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), dpi=100)
    FigureCanvasAgg(fig)
    loss_ax, metric_ax = fig.subplots(1, 2)
    for name, series in curves["loss"].items():
        loss_ax.plot(*zip(*series, strict=True), label=name)
    loss_ax.set(xlabel="iteration", ylabel="loss", title="training loss")
    loss_ax.legend()
    minutes = dict(curves["minutes"])
    for name, series in curves["metrics"].items():
        if series:
            metric_ax.plot([minutes[epoch] for epoch, _ in series], [value for _, value in series], marker="o",
                           label=name)
    metric_ax.axhline(curves["chance_miou"], linestyle="--", color="gray", label="chance mIoU (all background)")
    metric_ax.set(xlabel="minutes since the command started (untrained, then each epoch's end)", ylabel="%",
                  ylim=(0, 100), title="held-out zero-shot segmentation / classification")
    metric_ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def training_curves(history: History, untrained: dict[str, float], chance: float, start_s: float,
                    train_s: float) -> dict[str, Any]:
    """Loss per iteration and the per-epoch evaluations, from the history ``training.train`` returns; ``minutes``:
    when each evaluated model was ready, counted from the command's start: the untrained one at ``start_s`` (when
    training began), each epoch's end with the ``train_s`` seconds of training shared evenly over its epochs."""
    names = [name for name in (history.steps[0] if history.steps else {}) if name.endswith("loss")]
    loss = {name: [(step["iteration"], step[name]) for step in history.steps] for name in names}
    metrics = {}
    for name, key in (("mIoU", "miou"), ("top-1", "acc1")):
        metrics[name] = [(0, untrained[name])] + [(e["epoch"] + 1, e[key]) for e in history.epochs if key in e]
    epochs = [e["epoch"] + 1 for e in history.epochs]
    minutes = [(0, start_s / 60)] + [(epoch, (start_s + train_s * (i + 1) / len(epochs)) / 60)
                                     for i, epoch in enumerate(epochs)]
    return {"loss": loss, "metrics": metrics, "chance_miou": chance, "minutes": minutes}


# --------------------------------------------------------------------------------------------- main


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "load_average": [round(v, 2) for v in os.getloadavg()],
            "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    start_wall, start_cpu = time.perf_counter(), cpu_seconds()
    device = select_device(args.device)
    torch.set_num_threads(args.threads)
    args.output = args.output.resolve()
    args.data_dir = args.data_dir.resolve()
    with hold_run_lock(args.output):  # one run per --output
        claim_output(args)
        return run(args, device, start_wall, start_cpu)


def run(args: argparse.Namespace, device: torch.device, start_wall: float, start_cpu: float) -> dict[str, Any]:
    """Every step of the quickstart, into ``args.output`` (locked and claimed by ``main``)."""
    logger = get_logger(args.output, name="quickstart")
    start_machine = machine()
    timer = Timer()

    cfg = run_config(args, None)  # validates --cfg/--opts before any work; gives the image size
    with timer("data"):
        info = ensure_data(args, cfg.data.img_aug.img_size, logger.info)
    cfg = run_config(args, info)
    config_path = args.output / "quickstart_config.yml"
    save_config(cfg, config_path)
    seg_root = args.data_dir / "seg"

    from models import build_model
    from segmentation.model_loading import load_eval_model
    from training.rng import set_random_seed

    with timer("untrained evaluation"):
        logger.info("evaluating the untrained model (same architecture and seed, before any training step)")
        set_random_seed(cfg.seed)
        untrained_model = build_model(cfg.model).to(device)
        untrained_seg = evaluate_seg_to(cfg, untrained_model, args.output / "predictions" / "untrained", logger)
        untrained_cls = evaluate_cls(cfg, untrained_model, device)
        untrained_groups = grouping_report(cfg, untrained_model, seg_root)
        del untrained_model

    train_dir = args.output / "train"
    with timer("training"):
        from training import train

        logger.info(f"training: {cfg.train.epochs} epochs of {cfg.data.dataset.meta.synthetic.length} pairs, "
                    f"batch {cfg.data.batch_size}, on {device} ({args.threads} threads); log {train_dir / 'log.txt'}")
        history = train(get_config(argparse.Namespace(cfg=str(config_path), output=str(train_dir))), device=device)

    with timer("final evaluation"):
        checkpoint = train_dir / "checkpoint.pth"
        model, _ = load_eval_model(cfg, str(checkpoint), device)
        seg = evaluate_seg_to(cfg, model, args.output / "predictions" / "trained", logger)
        cls = evaluate_cls(cfg, model, device)
        groups = grouping_report(cfg, model, seg_root)
        (args.output / "cls_predictions.json").write_text(json.dumps(cls) + "\n")
        chance = chance_miou(seg_root)

    with timer("pictures"):
        pictures = draw_pictures(cfg, model, seg_root, args.output / "pictures", args.pictures)
        untrained = {"mIoU": untrained_seg["mIoU"], "top-1": untrained_cls["acc1"]}
        training_start = sum(timer.phases[phase]["wall_s"] for phase in ("data", "untrained evaluation"))
        curves = training_curves(history, untrained, chance["all_background"], training_start,
                                 timer.phases["training"]["wall_s"])
        (args.output / "curves.json").write_text(json.dumps(curves) + "\n")
        plot_curves(curves, args.output / "curves.png")

    results = {
        "miou": seg["mIoU"], "miou_untrained": untrained_seg["mIoU"], "miou_chance": chance,
        "top1": cls["acc1"], "top5": cls["acc5"], "top1_untrained": untrained_cls["acc1"],
        "bound": groups["bound"], "grouping": groups, "grouping_untrained": untrained_groups,
        "seg": seg, "seg_untrained": untrained_seg,
        "time": {"total_wall_s": round(time.perf_counter() - start_wall, 1),
                 "total_cpu_s": round(cpu_seconds() - start_cpu, 1), "phases": timer.phases},
        "machine": {"start": start_machine, "end": machine()}, "device": str(device),
        "paths": {"output": str(args.output), "data": str(args.data_dir), "config": str(config_path),
                  "checkpoint": str(checkpoint), "train_log": str(train_dir / "log.txt"),
                  "tensorboard": str(train_dir / "tensorboard"),
                  "predictions": str(args.output / "predictions" / "trained" / "pred"),
                  "predictions_untrained": str(args.output / "predictions" / "untrained" / "pred"),
                  "cls_predictions": str(args.output / "cls_predictions.json"),
                  "pictures": [str(p) for p in pictures], "curves": str(args.output / "curves.png"),
                  "curves_data": str(args.output / "curves.json")},
    }
    results_path = args.output / "quickstart_results.json"
    results["paths"]["results"] = str(results_path)
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    logger.info(summary(results))
    return results


def summary(r: dict[str, Any]) -> str:
    p, t, m = r["paths"], r["time"], r["machine"]
    chance = r["miou_chance"]
    num_classes = len(r["seg"]["IoU"]) - 1  # the held-out set's classes, background left out
    lines = [
        "", "=" * 100, "GroupViT quickstart: zero-shot segmentation and classification, learned from captions alone",
        "=" * 100,
        f"  held-out segmentation ({r['seg']['num_images']} images, {num_classes} classes + background, "
        "background included):",
        f"    mIoU trained    {r['miou']:6.2f}",
        f"    mIoU untrained  {r['miou_untrained']:6.2f}   (same model before training)",
        f"    mIoU chance     {chance['all_background']:6.2f}   (all background; uniform random labels: "
        f"{chance['uniform_random']:.2f})",
        f"    patch-grid bound {r['bound']:5.2f}   (each patch labelled with its true majority class)",
        "  groups (trained / untrained): " + ", ".join(
            f"{k} {r['grouping'][k]} / {r['grouping_untrained'][k]}"
            for k in ("oracle_soft", "oracle_hard", "groups", "s0_max", "label_agreement")),
        f"  zero-shot classification: top-1 {r['top1']:.2f}%  top-5 {r['top5']:.2f}%  "
        f"(untrained top-1 {r['top1_untrained']:.2f}%, chance {100 / num_classes:.1f}%)",
        f"  time: {t['total_wall_s']:.0f} s wall, {t['total_cpu_s']:.0f} s CPU on {r['device']} "
        f"({m['start']['cpus']} CPUs, load average {m['start']['load_average'][0]} at the start, "
        f"{m['end']['load_average'][0]} at the end)",
        "    " + ", ".join(f"{k} {v['wall_s']:.0f} s ({v['cpu_s']:.0f} s CPU)" for k, v in t["phases"].items()),
        f"  pictures:    {Path(p['pictures'][-1]).parent if p['pictures'] else '(none)'}  "
        f"({', '.join(PICTURE_MODES)}, overview.png)",
        f"  curves:      {p['curves']}",
        f"  predictions: {p['predictions']}  (pixel value = class index)",
        f"  checkpoint:  {p['checkpoint']}",
        f"  results:     {p['results']}",
        "=" * 100,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    run_cli(main)
