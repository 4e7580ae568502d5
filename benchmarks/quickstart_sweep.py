"""Does segmentation emerge from captions? Quickstart variants, each run by the quickstart itself.

    python benchmarks/quickstart_sweep.py --variants chosen chosen_no_group_loss --out-dir DIR
    python benchmarks/quickstart_sweep.py --variants chosen --train-samples 12800 --epochs 2   # = ./quickstart.sh

A variant is a world (``datasets.synthetic.WORLDS``) plus config overrides of ``configs/quickstart.yml``. Each
variant is one call of ``tools/quickstart.py``'s ``main`` with ``--world`` and ``--opts``: the same data files and
loader, training loop (``training.train``), evaluation (``segmentation.evaluation.evaluate_seg``, zero-shot
classification) and grouping diagnostics as ``./quickstart.sh``, so a row is what the quickstart gets. Beside the
quickstart's own numbers, the trained checkpoint is evaluated by ``evaluate_seg`` on two more seg splits of the
same world, written by ``tools/make_synthetic_data.py``'s writer:
- a validation world (--val-seed) chooses the background threshold among ``BG_THRESHOLDS`` (never the held-out
  set); the held-out mIoU at that threshold is ``mIoU (val bg)``;
- a second world seed (--seed2), reached by pointing the run's saved config at its folder by the data root alone,
  as the quickstart guide shows: ``mIoU seed 2``, at the run's own threshold.
Results: a table on stdout, ``results.json`` and ``results.md`` in --out-dir; each variant's quickstart output in
``--out-dir/<variant>/``, the worlds in ``--out-dir/data/``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from common import ROOT, Table, machine_description  # isort: skip  (common puts the project on sys.path)

sys.path.insert(0, str(ROOT / "tools"))  # tools/ is not a package

import quickstart  # noqa: E402

from datasets.synthetic import WORLDS, write_world  # noqa: E402
from segmentation.evaluation import evaluate_seg  # noqa: E402
from segmentation.evaluation.diagnostics import BG_THRESHOLDS  # noqa: E402
from segmentation.model_loading import load_eval_model  # noqa: E402
from utils.config import apply_opts, load_config  # noqa: E402
from utils.logger import get_logger  # noqa: E402


@dataclass(frozen=True)
class Variant:
    world: str
    opts: tuple[str, ...] = ()


# Every variant states its layout, init and learning rate, so that it does not depend on configs/quickstart.yml.
ONE_STAGE = ("model.img_encoder.depths=[2,1]", "model.img_encoder.num_group_tokens=[16,0]",
             "model.img_encoder.num_output_groups=[16]", "model.img_encoder.embed_factors=[1,1]",
             "model.img_encoder.num_heads=[4,4]")
TWO_STAGE = ("model.img_encoder.depths=[2,2,1]", "model.img_encoder.num_group_tokens=[16,8,0]",
             "model.img_encoder.num_output_groups=[16,8]", "model.img_encoder.embed_factors=[1,1,1]",
             "model.img_encoder.num_heads=[4,4,4]")
REF_INIT, INIT = ("model.img_encoder.assign_init_scale=[1.0,1.0]",), ("model.img_encoder.assign_init_scale=[6.0,4.0]",)
LR, LR_X2 = ("train.base_lr=1.6e-2",), ("train.base_lr=3.2e-2",)
LR_X3, LR_X4 = ("train.base_lr=4.8e-2",), ("train.base_lr=6.4e-2",)
NO_GROUP_LOSS, GROUP_LOSS = ("model.group_loss_weight=0.0",), ("model.group_loss_weight=1.0",)
EIGHT_GROUPS = ("model.img_encoder.num_group_tokens=[8,0]", "model.img_encoder.num_output_groups=[8]")
BATCH_64 = ("data.batch_size=64",)  # 400 steps of 64 in the time of 200 of 128; the lr is scaled to the batch
CHOSEN = (*ONE_STAGE, *INIT, *LR_X2, *GROUP_LOSS)
VARIANTS: dict[str, Variant] = {
    "v1_2stage": Variant("v1", (*TWO_STAGE, *REF_INIT, *LR, *NO_GROUP_LOSS)),  # the first quickstart
    "chosen": Variant("v3", CHOSEN),  # configs/quickstart.yml
    "chosen_no_group_loss": Variant("v3", (*ONE_STAGE, *INIT, *LR_X2, *NO_GROUP_LOSS)),
    "chosen_no_init": Variant("v3", (*ONE_STAGE, *REF_INIT, *LR_X2, *GROUP_LOSS)),
    "chosen_lr_x1": Variant("v3", (*ONE_STAGE, *INIT, *LR, *GROUP_LOSS)),
    "chosen_2stage": Variant("v3", (*TWO_STAGE, *INIT, *LR_X2, *GROUP_LOSS)),
    "chosen_64px": Variant("v2", CHOSEN),  # world v2: v3 at 64 px
    "chosen_warmup_quarter": Variant("v3", (*CHOSEN, "train.warmup_epochs=0.25")),  # full lr after 25 steps, not 100
    "chosen_8_groups": Variant("v3", (*CHOSEN, *EIGHT_GROUPS)),
    "chosen_lr_x1.5": Variant("v3", (*ONE_STAGE, *INIT, "train.base_lr=2.4e-2", *GROUP_LOSS)),
    "chosen_12_classes": Variant("v3_12_classes", CHOSEN),  # 4 more shape classes
    "chosen_untied_colour": Variant("v3_untied_colour", CHOSEN),  # colour independent of the class (class = shape)
    "chosen_lr_x3": Variant("v3", (*ONE_STAGE, *INIT, *LR_X3, *GROUP_LOSS)),
    "chosen_8_groups_lr_x3": Variant("v3", (*ONE_STAGE, *INIT, *LR_X3, *GROUP_LOSS, *EIGHT_GROUPS)),
    "chosen_batch_64": Variant("v3", (*CHOSEN, *BATCH_64)),
    "chosen_batch_64_lr_x4": Variant("v3", (*ONE_STAGE, *INIT, *LR_X4, *GROUP_LOSS, *BATCH_64)),  # chosen's lr per step
    "chosen_batch_64_lr_x4_warmup_half": Variant("v3", (*ONE_STAGE, *INIT, *LR_X4, *GROUP_LOSS, *BATCH_64,
                                                        "train.warmup_epochs=0.5")),
}


def seg_split(args: argparse.Namespace, world: str, seed: int) -> Path:
    """The seg split of ``world`` at ``seed`` (written once into --out-dir/data/): its folder."""
    folder = Path(args.out_dir) / "data" / f"{world}_seg_seed{seed}"
    if not (folder / "info.json").is_file():
        write_world(folder, WORLDS[world], seed, train=0, seg=args.seg_images, cls=0, world=world,
                    workers=args.workers)
    return folder / "seg"


def evaluate_on(cfg: DictConfig, model: torch.nn.Module, seg_root: Path, bg_threshs: Sequence[float] | None):
    """``evaluate_seg`` of ``model`` on the seg folder ``seg_root``, pointed at by its data root alone."""
    cfg = apply_opts(copy.deepcopy(cfg), [f"evaluate.seg.opts=[data_root={seg_root}]"])
    return evaluate_seg(cfg, model, get_logger(name="quickstart_sweep"), bg_threshs=bg_threshs)


def run_variant(name: str, args: argparse.Namespace) -> dict:
    variant = VARIANTS[name]
    out = Path(args.out_dir)
    flags = ["--world", variant.world, "--output", str(out / name),
             "--data-dir", str(out / "data" / f"{variant.world}_seed{args.seed}"),
             "--train-samples", str(args.train_samples), "--epochs", str(args.epochs),
             "--seg-images", str(args.seg_images), "--cls-images", str(args.cls_images), "--pictures", "0",
             "--seed", str(args.seed), "--workers", str(args.workers), "--threads", str(args.threads)]
    if args.overwrite:
        flags.append("--overwrite")
    size = WORLDS[variant.world].image_size  # the quickstart renders --world at the config's image size
    opts = [f"data.img_aug.img_size={size}", f"model.img_encoder.img_size={size}", *variant.opts, *args.opts]
    result = quickstart.main([*flags, "--opts", *opts])

    cfg = load_config(result["paths"]["config"])
    model, cfg = load_eval_model(cfg, result["paths"]["checkpoint"], torch.device("cpu"))
    val = evaluate_on(cfg, model, seg_split(args, variant.world, args.val_seed), BG_THRESHOLDS)
    bg = max(val.sweep, key=lambda r: r.miou).bg_thresh
    held_out = evaluate_on(cfg, model, Path(result["paths"]["data"]) / "seg", [bg])
    seed2 = evaluate_on(cfg, model, seg_split(args, variant.world, args.seed2), None)
    curves = json.loads(Path(result["paths"]["curves_data"]).read_text())
    return {"name": name, "world": variant.world, "opts": opts, "bound": result["bound"],
            "mIoU_chance": result["miou_chance"]["all_background"],
            "mIoU_untrained": result["miou_untrained"], "mIoU": result["miou"], "bg": cfg.evaluate.seg.bg_thresh,
            "mIoU_val_bg": held_out.miou, "val_bg": bg, "mIoU_seed2": seed2.miou, "top1": result["top1"],
            "grouping_untrained": result["grouping_untrained"], "grouping": result["grouping"],
            "steps": len(curves["loss"].get("total_loss", [])), "mIoU_per_epoch": curves["metrics"]["mIoU"],
            "time": result["time"]}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser("quickstart emergence sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--train-samples", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seg-images", type=int, default=200)
    p.add_argument("--cls-images", type=int, default=200)
    p.add_argument("--seed", type=int, default=0, help="training world seed (its seg split is the held-out set)")
    p.add_argument("--val-seed", type=int, default=1000, help="world seed whose seg split chooses bg_thresh")
    p.add_argument("--seed2", type=int, default=1, help="second world seed, evaluated at the run's bg_thresh")
    p.add_argument("--opts", nargs="*", default=[], help="extra config overrides for every variant")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--overwrite", action="store_true", help="replace the variants' earlier runs in --out-dir")
    p.add_argument("--out-dir", default=os.environ.get("OUT") or "bench_out")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(machine_description(torch.device("cpu")), flush=True)
    results = []
    for name in args.variants:
        results.append(run_variant(name, args))
        (out / "results.json").write_text(json.dumps(results, indent=1))
    table = Table(["variant", "world", "bound", "steps", "wall s", "mIoU @0", "mIoU", "mIoU (val bg)", "val bg",
                   "mIoU seed 2", "oracle hard", "groups", "label agr.", "top-1"], [])
    print(table.header(), flush=True)
    for r in results:
        start, end = r["grouping_untrained"], r["grouping"]
        table.add(r["name"], r["world"], r["bound"], r["steps"], r["time"]["total_wall_s"], r["mIoU_untrained"],
                  r["mIoU"], r["mIoU_val_bg"], r["val_bg"], r["mIoU_seed2"],
                  f"{start['oracle_hard']} -> {end['oracle_hard']}", f"{start['groups']} -> {end['groups']}",
                  f"{start['label_agreement']} -> {end['label_agreement']}", r["top1"])
    (out / "results.md").write_text(f"{machine_description(torch.device('cpu'))}\n\n{table.markdown()}\n")
    return results


if __name__ == "__main__":
    main()
