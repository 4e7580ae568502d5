"""Convert COCO-Stuff-164k label maps to COCO-Object labels (80 thing classes + background).

    python convert_dataset/convert_coco_object.py local_data/coco [-o OUT_DIR] [--nproc 16]

Reads ``<coco>/annotations/{train2017,val2017}/*.png`` (COCO-Stuff ids; files named ``*TrainIds*`` are
skipped) and writes ``<out>/annotations/<split>/<name>_instanceTrainIds.png``: the 80 thing ids (0..89 with
gaps) become 1..80 in COCO order, everything else (the stuff ids 91..181, unused ids and 255 = unlabelled)
becomes 0 = background, so the result has no ignore pixels. With ``-o`` elsewhere, ``images/`` is copied to
the output first. Any subset of the files works; a count other than the full 123,287 is only a warning.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from utils.cli import add_debug_flag, run_cli  # noqa: E402
from utils.errors import UserError, one_line  # noqa: E402

SPLITS = ("train2017", "val2017")
FULL_COUNT = 123_287  # train2017 + val2017 label maps of COCO-Stuff-164k
# COCO-Stuff ids of the 80 thing classes (COCO category id - 1), in COCO order.
THING_IDS = tuple(i for i in range(90) if i not in (11, 25, 28, 29, 44, 65, 67, 68, 70, 82))
assert len(THING_IDS) == 80


def lookup_table() -> np.ndarray:
    """uint8 [256]: COCO-Stuff id -> COCO-Object id."""
    table = np.zeros(256, dtype=np.uint8)
    table[list(THING_IDS)] = np.arange(1, 81, dtype=np.uint8)
    return table


def convert_file(src: Path, dst_dir: Path) -> Path:
    """Convert one label map; returns the written file."""
    try:
        label = np.array(Image.open(src))
    except OSError as e:  # PIL's UnidentifiedImageError included
        raise UserError(f"cannot read {src} as a label map: {one_line(e)}") from None
    if label.ndim != 2:
        raise UserError(f"{src} is not a single-channel label map (shape {label.shape})")
    dst = dst_dir / f"{src.stem}_instanceTrainIds.png"
    Image.fromarray(lookup_table()[label]).save(dst)
    return dst


def label_files(coco: Path) -> dict[str, list[Path]]:
    """The COCO-Stuff label maps per split (sorted); a missing split folder is left out."""
    files = {}
    for split in SPLITS:
        folder = coco / "annotations" / split
        if folder.is_dir():
            files[split] = sorted(p for p in folder.glob("*.png") if "TrainIds" not in p.name)
    return files


def convert(coco: Path, out: Path, nproc: int = 1) -> int:
    """Convert every label map under ``coco`` into ``out``; returns the number of files written."""
    if not (coco / "annotations").is_dir():
        raise UserError(f"no COCO-Stuff annotations folder: {coco / 'annotations'} does not exist")
    files = label_files(coco)
    total = sum(len(v) for v in files.values())
    if total == 0:
        raise UserError(f"no label maps (*.png) in {coco / 'annotations'}/{{{','.join(SPLITS)}}}")
    if total != FULL_COUNT:
        print(f"warning: found {total} label maps, not the {FULL_COUNT} of the full COCO-Stuff-164k train+val; "
              "converting them anyway", file=sys.stderr)
    if out.resolve() != coco.resolve() and (coco / "images").is_dir():
        shutil.copytree(coco / "images", out / "images", dirs_exist_ok=True)
    with tqdm(total=total, desc="COCO-Object labels", dynamic_ncols=True) as bar:
        for split, paths in files.items():
            dst_dir = out / "annotations" / split
            dst_dir.mkdir(parents=True, exist_ok=True)
            work = partial(convert_file, dst_dir=dst_dir)
            if nproc > 1:
                with Pool(nproc) as pool:
                    for _ in pool.imap_unordered(work, paths, chunksize=16):
                        bar.update()
                    pool.close()  # the workers end on their own; terminate() (the block's exit) is for errors
                    pool.join()
            else:
                for path in paths:
                    work(path)
                    bar.update()
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="COCO-Stuff-164k labels -> COCO-Object labels")
    parser.add_argument("coco_path", help="COCO root holding images/ and annotations/{train2017,val2017}")
    parser.add_argument("-o", "--out_dir", help="output root (default: coco_path)")
    parser.add_argument("--nproc", type=int, default=16, help="worker processes (default 16)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    coco = Path(args.coco_path)
    count = convert(coco, Path(args.out_dir) if args.out_dir else coco, max(1, args.nproc))
    print(f"converted {count} label maps")
    return count


if __name__ == "__main__":
    run_cli(main)
