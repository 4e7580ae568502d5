"""Generate a synthetic image-caption world (datasets/synthetic/): training shards, a held-out segmentation set
in the Pascal VOC layout and a classification set, then print where everything went and the config values to use.

    python tools/make_synthetic_data.py --out local_data/synthetic --train-samples 12800 --workers 2
    python tools/make_synthetic_data.py --seed 1 --train-samples 0 --out local_data/synthetic_seed1  # held-out only

The defaults give the world the quickstart trains on (--world, datasets/synthetic/spec.py's WORLDS). Same
arguments, same bytes (whatever --workers). Writes <out>/train, <out>/seg, <out>/cls and <out>/info.json; a
folder that holds any of them already (another world) is refused, or with --overwrite replaced once the new world is
complete (a failed run leaves the old one as it was).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/ is not a package

from datasets.synthetic import DEFAULT_WORLD, WORLDS, write_world  # noqa: E402
from utils.cli import add_debug_flag, make_output_dir, run_cli  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.overwrite import add_overwrite_flag, refuse_to_overwrite, replacing  # noqa: E402

PARTS = ("train", "seg", "cls", "info.json")  # what write_world writes into --out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("local_data/synthetic"), help="output folder")
    p.add_argument("--train-samples", type=int, default=12800, help="image-caption pairs (0: none)")
    p.add_argument("--seg-images", type=int, default=500, help="held-out segmentation images (0: none)")
    p.add_argument("--cls-images", type=int, default=1000, help="classification images (0: none)")
    p.add_argument("--world", default=DEFAULT_WORLD, choices=sorted(WORLDS), help="which world (WorldSpec)")
    p.add_argument("--image-size", type=int, help="image side in pixels (default: the world's)")
    p.add_argument("--samples-per-shard", type=int, default=1000, help="samples per tar shard")
    p.add_argument("--seed", type=int, default=0, help="world seed (each split draws its own stream from it)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    add_overwrite_flag(p, "the world in --out")
    add_debug_flag(p)
    args = p.parse_args(argv)
    if min(args.train_samples, args.seg_images, args.cls_images, args.seed) < 0:
        raise UserError("--train-samples, --seg-images, --cls-images and --seed must not be negative")
    if (args.image_size is not None and args.image_size < 32) or args.samples_per_shard < 1 or args.workers < 1:
        raise UserError("--image-size must be at least 32; --samples-per-shard and --workers at least 1")
    return args


def config_hint(train: dict | None, seg: dict | None, cls: dict | None) -> str:
    """The config values that point the training and evaluation code at the generated data."""
    lines = ["data.dataset.meta:"]
    for name, info, kind in (("synthetic", train, "img_txt_pair"), ("synthetic_cls", cls, "img_cls_pair")):
        if info:
            lines += [f"  {name}:", f"    type: {kind}", f"    path: {info['path']}",
                      f"    prefix: {info['prefix']}", f"    length: {info['length']}"]
    if train:
        lines.append("data.dataset.train: [synthetic]")
    if cls:
        lines += ["data.dataset.val: [synthetic_cls]", f"evaluate.cls.classnames: {cls['classnames']}"]
    if seg:
        lines.append(f"segmentation data_root (Pascal VOC layout): {seg['root']}  "
                     f"(classes: {seg['root']}/classes.txt, split ImageSets/Segmentation/val.txt)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    make_output_dir(args.out)
    spec = WORLDS[args.world]
    if args.image_size is not None:
        spec = replace(spec, image_size=args.image_size)
    parts = [args.out / part for part in PARTS]
    refuse_to_overwrite(parts, "a synthetic world", args.overwrite)
    start = time.perf_counter()
    with replacing(parts):
        info = write_world(args.out, spec, args.seed, args.train_samples, args.seg_images, args.cls_images,
                           world=args.world, samples_per_shard=args.samples_per_shard, workers=args.workers,
                           progress=True)
    train, seg, cls = info["train"], info["seg"], info["cls"]
    seconds = time.perf_counter() - start
    total = args.train_samples + args.seg_images + args.cls_images
    print(f"\n{total} images in {seconds:.1f} s ({total / max(seconds, 1e-9):.0f} images/s, {args.workers} workers)")
    print(f"world {args.world}: {spec.image_size} px, classes {', '.join(spec.class_names[1:])} (+ background)")
    print(f"summary: {args.out / 'info.json'}\n")
    print(config_hint(train, seg, cls))


if __name__ == "__main__":
    run_cli(main)
