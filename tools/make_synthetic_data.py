"""Generate the synthetic image-caption world (datasets/synthetic.py): training shards, a held-out segmentation set
in the Pascal VOC layout and a classification set, then print where everything went and the config values to use.

    python tools/make_synthetic_data.py --out local_data/synthetic --train-samples 20000 --workers 2

Same arguments, same bytes (whatever --workers). Writes <out>/train, <out>/seg, <out>/cls and <out>/info.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/ is not a package

from datasets.synthetic import CLASS_NAMES, write_cls_set, write_seg_set, write_train_shards  # noqa: E402
from utils.cli import add_debug_flag, make_output_dir, run_cli  # noqa: E402
from utils.errors import UserError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("local_data/synthetic"), help="output folder")
    p.add_argument("--train-samples", type=int, default=20000, help="image-caption pairs (0: none)")
    p.add_argument("--seg-images", type=int, default=500, help="held-out segmentation images (0: none)")
    p.add_argument("--cls-images", type=int, default=1000, help="classification images (0: none)")
    p.add_argument("--image-size", type=int, default=96, help="image side in pixels")
    p.add_argument("--samples-per-shard", type=int, default=1000, help="samples per tar shard")
    p.add_argument("--seed", type=int, default=0, help="world seed (each split draws its own stream from it)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    add_debug_flag(p)
    args = p.parse_args(argv)
    if min(args.train_samples, args.seg_images, args.cls_images, args.seed) < 0:
        raise UserError("--train-samples, --seg-images, --cls-images and --seed must not be negative")
    if args.image_size < 32 or args.samples_per_shard < 1 or args.workers < 1:
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
    common = dict(seed=args.seed, image_size=args.image_size, workers=args.workers)
    start = time.perf_counter()
    train = seg = cls = None
    if args.train_samples:
        train = write_train_shards(args.out / "train", args.train_samples, samples_per_shard=args.samples_per_shard,
                                   desc="train", **common)
    if args.seg_images:
        seg = write_seg_set(args.out / "seg", args.seg_images, desc="seg", **common)
    if args.cls_images:
        cls = write_cls_set(args.out / "cls", args.cls_images, samples_per_shard=args.samples_per_shard,
                            desc="cls", **common)
    seconds = time.perf_counter() - start
    total = args.train_samples + args.seg_images + args.cls_images
    info = {"seed": args.seed, "image_size": args.image_size, "classes": list(CLASS_NAMES), "train": train,
            "seg": seg, "cls": cls}
    tmp = args.out / ".info.json.partial"
    tmp.write_text(json.dumps(info, indent=1) + "\n")
    os.replace(tmp, args.out / "info.json")
    print(f"\n{total} images in {seconds:.1f} s ({total / max(seconds, 1e-9):.0f} images/s, {args.workers} workers)")
    print(f"classes: {', '.join(CLASS_NAMES[1:])} (+ background)")
    print(f"summary: {args.out / 'info.json'}\n")
    print(config_hint(train, seg, cls))


if __name__ == "__main__":
    run_cli(main)
