"""Convert the ImageNet validation images into webdataset shards (jpg + cls) for zero-shot classification.

    python convert_dataset/convert_imagenet.py VAL_DIR [--labels FILE] [--shards-out local_data/imagenet_shards]

Accepted layouts:
- class folders ``VAL_DIR/<wnid>/*.JPEG`` (e.g. after the usual valprep.sh): the class index is the folder's position
  among the sorted folder names, the standard wnid order that ``datasets.templates.imagenet_classes`` follows;
- a flat folder ``VAL_DIR/*.JPEG`` with ``--labels FILE``, one ``<file name> <label>`` per line, the label being
  either the 0-based class index in that order (e.g. Caffe's ``val.txt``) or the wnid (``n01440764``; indices then
  follow the sorted wnids). The devkit's ``ILSVRC2012_validation_ground_truth.txt`` is refused: its 1-based
  ILSVRC2012 ids follow another class order (meta.mat); use one of the forms above instead.

Samples ``{__key__: file name without extension, jpg: the raw bytes, cls: class index}`` are written in file-name
order, split evenly over ``--num-shards`` shards ``imagenet-val-000000.tar`` ... (50 x 1000 for the 50,000 images).
The class count must equal ``--num-classes`` (default: the 1000 of imagenet_classes). Every image is checked
(``datasets.image_check``): empty, undecodable, truncated or too large files are skipped with a warning and counted;
more than ``--max-bad-fraction`` of them (judged from 1000 images on, and at the end) stops the conversion, and the
shard being written is discarded.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repository root

from tqdm import tqdm  # noqa: E402

from convert_dataset.shard_writer import ShardWriter  # noqa: E402
from datasets.image_check import BadImage, BadImageCount, check_image  # noqa: E402
from datasets.templates import imagenet_classes  # noqa: E402
from utils.cli import add_debug_flag, run_cli  # noqa: E402
from utils.errors import UserError  # noqa: E402

SHARD_PATTERN = "imagenet-val-%06d.tar"
IMAGE_SUFFIXES = {".jpeg", ".jpg"}
_WNID = re.compile(r"n\d{8}")


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def from_class_folders(root: Path) -> list[tuple[Path, int]]:
    """(image, class index) with the classes = the sorted sub-folder names."""
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        hint = "; for the flat layout pass --labels FILE" if any(map(is_image, root.iterdir())) else ""
        raise UserError(f"{root} has no class folders{hint}")
    samples = []
    for index, folder in enumerate(folders):
        images = sorted(filter(is_image, folder.iterdir()))
        if not images:
            raise UserError(f"class folder {folder} holds no .JPEG/.jpg image")
        samples += [(image, index) for image in images]
    return samples


def read_labels(path: Path) -> dict[str, str]:
    """file name -> label (index or wnid) from a '<file name> <label>' file."""
    if not path.is_file():
        raise UserError(f"labels file {path} not found")
    labels: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) == 1 and fields[0].isdigit():
            raise UserError(
                f"{path} looks like the devkit's ILSVRC2012_validation_ground_truth.txt (one ILSVRC id per line, "
                "in a class order that differs from imagenet_classes); give '<file name> <class index>' lines "
                "(e.g. Caffe's val.txt), '<file name> <wnid>' lines or class folders instead"
            )
        if len(fields) != 2:
            raise UserError(f"{path} line {number}: expected '<file name> <class index or wnid>', got {line!r}")
        if fields[0] in labels:
            raise UserError(f"{path} line {number}: {fields[0]} is listed twice")
        labels[fields[0]] = fields[1]
    if not labels:
        raise UserError(f"labels file {path} is empty")
    return labels


def from_labels(root: Path, labels_file: Path, num_classes: int) -> list[tuple[Path, int]]:
    """(image, class index) for a flat folder of images and a labels file."""
    labels = read_labels(labels_file)
    values = set(labels.values())
    if all(_WNID.fullmatch(v) for v in values):
        wnids = sorted(values)
        if len(wnids) != num_classes:
            raise UserError(f"{labels_file} names {len(wnids)} distinct wnids, expected {num_classes} classes")
        to_index = {wnid: i for i, wnid in enumerate(wnids)}
    elif all(v.isdigit() and int(v) < num_classes for v in values):
        to_index = {v: int(v) for v in values}
    else:
        raise UserError(f"{labels_file}: labels must all be wnids or all class indices 0..{num_classes - 1}")
    images = {p.name: p for p in root.iterdir() if is_image(p)}
    missing = sorted(set(labels) - set(images))
    if missing:
        raise UserError(f"{len(missing)} image(s) of {labels_file} are not in {root}, e.g. {missing[0]}")
    unlabelled = sorted(set(images) - set(labels))
    if unlabelled:
        raise UserError(f"{len(unlabelled)} image(s) of {root} have no label in {labels_file}, e.g. {unlabelled[0]}")
    return [(images[name], to_index[label]) for name, label in labels.items()]


def write_shards(samples: list[tuple[Path, int]], writer: ShardWriter, num_shards: int,
                 max_bad_fraction: float) -> BadImageCount:
    """Write the samples whose image passes ``check_image``, split evenly (by position) over ``num_shards`` shards;
    the others are named in a warning and counted. Too many bad images raise a UserError."""
    count = BadImageCount(max_bad_fraction)
    for i, (image, index) in enumerate(tqdm(samples, unit="img", desc="imagenet")):
        if i * num_shards // len(samples) > len(writer.shards):  # even split: shard = i * S // N
            writer.next_shard()
        data = image.read_bytes()
        try:
            check_image(data, image)
        except BadImage as e:
            tqdm.write(f"warning: skipped {e}", file=sys.stderr)
            count.add(ok=False)
        else:
            writer.write({"__key__": image.stem, "jpg": data, "cls": index})
            count.add(ok=True)
        count.check()
    count.check(final=True)
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_debug_flag(parser)
    parser.add_argument("val_dir", type=Path, help="ImageNet val folder: <wnid>/ class folders, or flat with --labels")
    parser.add_argument("--labels", type=Path, help="'<file name> <class index or wnid>' per line (flat layout)")
    parser.add_argument("--shards-out", type=Path, default=Path("local_data/imagenet_shards"), help="output folder")
    parser.add_argument("--num-shards", type=int, default=50, help="number of shards (default 50)")
    parser.add_argument("--num-classes", type=int, default=len(imagenet_classes), help="expected class count")
    parser.add_argument("--max-bad-fraction", type=float, default=0.5,
                        help="stop when more than this fraction of the images is bad (default 0.5, as the training "
                             "loader's data.max_bad_fraction)")
    args = parser.parse_args(argv)

    if not args.val_dir.is_dir():
        raise UserError(f"ImageNet val folder {args.val_dir} not found")
    if args.labels:
        samples = from_labels(args.val_dir, args.labels, args.num_classes)
    else:
        samples = from_class_folders(args.val_dir)
        found = samples[-1][1] + 1
        if found != args.num_classes:
            raise UserError(f"{args.val_dir} has {found} class folders, expected {args.num_classes} (--num-classes)")
    samples.sort(key=lambda sample: sample[0].name)
    keys = [image.stem for image, _ in samples]
    if len(set(keys)) != len(keys):
        raise UserError(f"{args.val_dir}: several images share a file name; webdataset keys must be unique")
    if not 1 <= args.num_shards <= len(samples):
        raise UserError(f"--num-shards must be between 1 and the number of images ({len(samples)})")

    with ShardWriter(args.shards_out / SHARD_PATTERN) as writer:
        count = write_shards(samples, writer, args.num_shards, args.max_bad_fraction)
    if count.bad:
        print(f"skipped {count.bad} bad image(s) of {count.read}", file=sys.stderr)
    print(f"wrote {writer.total} images, {args.num_classes} classes, {len(writer.shards)} shards to {args.shards_out}")

if __name__ == "__main__":
    run_cli(main)
