"""Convert the YFCC14M images (zip archives) and their captions (TSV) into webdataset shards (jpg + text).

    python convert_dataset/convert_yfcc14m.py --root yfcc100m_zip --info yfcc14m_dataset.tsv \\
        --shards local_data/yfcc14m_shards [--maxsize 1e9 --maxcount 100000]

Reads every ``*.zip`` in ``--root`` (in name order) and every image in it. The member path without ``data/images/``
is looked up in the ``file`` column of ``--info`` (the TSV from ``create_subset.py``: header ``file<TAB>caption``).
Samples are ``{__key__: file name without extension, jpg: the raw bytes, text: caption}`` in shards
``yfcc14m-000000.tar``, ... (a new shard after ``--maxcount`` samples or ``--maxsize`` bytes). Skipped: images
already written (same key), captions with fewer than 2 words, images not in the TSV and unreadable members
(a corrupt archive is skipped whole and named). Every image is checked (``datasets.image_check``): empty,
undecodable, truncated or too large ones are skipped with a warning and counted as unreadable images; more than
``--max-bad-fraction`` of the images read stops the run. A summary of what was written and skipped ends the run.
"""

from __future__ import annotations

import argparse
import csv
import sys
import zipfile
import zlib
from collections import Counter
from pathlib import Path, PurePosixPath

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repository root

from tqdm import tqdm  # noqa: E402

from convert_dataset.shard_writer import ShardWriter  # noqa: E402
from convert_dataset.tsv import read_tsv_columns  # noqa: E402
from datasets.image_check import BadImage, BadImageCount, check_image  # noqa: E402
from utils.cli import add_debug_flag, run_cli  # noqa: E402
from utils.errors import UserError  # noqa: E402

SHARD_PATTERN = "yfcc14m-%06d.tar"
MEMBER_PREFIX = "data/images/"
MIN_WORDS = 2
SKIPPED = ("duplicates", "short captions", "not in the TSV", "unreadable images", "unreadable archives")


def read_captions(path: Path) -> dict[str, str]:
    """file -> caption from the TSV (plain or CSV-quoted fields, extra columns allowed)."""
    if not path.is_file():
        raise UserError(f"caption TSV {path} not found (create it with convert_dataset/create_subset.py)")
    csv.field_size_limit(sys.maxsize)
    captions = {}
    try:
        for _, (name, caption) in read_tsv_columns(path, ["file", "caption"]):
            captions[name] = caption
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text ({e})") from None
    return captions


def convert(archives: list[Path], captions: dict[str, str], writer: ShardWriter,
            max_bad_fraction: float = 0.5) -> Counter[str]:
    """Write the captioned images of ``archives``; return how many samples were written and skipped, and why.

    A UserError stops it when more than ``max_bad_fraction`` of the images read were unreadable."""
    counts: Counter[str] = Counter()
    seen: set[str] = set()
    bad = BadImageCount(max_bad_fraction)
    progress = tqdm(archives, unit="zip", desc="yfcc14m")
    for archive in progress:
        try:
            with zipfile.ZipFile(archive) as zf:
                for member in zf.infolist():
                    if not member.is_dir():
                        outcome = add_member(zf, member, captions, seen, writer)
                        counts[outcome] += 1
                        if outcome in ("written", "unreadable images"):
                            bad.add(ok=outcome == "written")
                            bad.check()
        except zipfile.BadZipFile as e:
            tqdm.write(f"warning: skipping {archive}: {e}")
            counts["unreadable archives"] += 1
        progress.set_postfix(written=counts["written"], skipped=sum(counts.values()) - counts["written"])
    bad.check(final=True)
    return counts


def add_member(
    zf: zipfile.ZipFile, member: zipfile.ZipInfo, captions: dict[str, str], seen: set[str], writer: ShardWriter
) -> str:
    """Write one zip member as a sample if it qualifies; return 'written' or why it was skipped (see SKIPPED)."""
    caption = captions.get(member.filename.replace(MEMBER_PREFIX, ""))
    if caption is None:
        return "not in the TSV"
    key = PurePosixPath(member.filename).stem
    if key in seen:
        return "duplicates"
    if len(caption.split()) < MIN_WORDS:
        return "short captions"
    try:
        data = zf.read(member)
        check_image(data, f"{zf.filename}:{member.filename}")
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
        tqdm.write(f"warning: skipped {zf.filename}:{member.filename}: {type(e).__name__}: {e}", file=sys.stderr)
        return "unreadable images"
    except BadImage as e:
        tqdm.write(f"warning: skipped {e}", file=sys.stderr)
        return "unreadable images"
    seen.add(key)
    writer.write({"__key__": key, "jpg": data, "text": caption})
    return "written"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_debug_flag(parser)
    parser.add_argument("--root", type=Path, required=True, help="folder with the yfcc100m *.zip archives")
    parser.add_argument("--info", type=Path, required=True, help="yfcc14m_dataset.tsv from create_subset.py")
    parser.add_argument("--shards", type=Path, required=True, help="output folder for the .tar shards")
    parser.add_argument("--maxsize", type=float, default=1e9, help="bytes per shard before a new one starts")
    parser.add_argument("--maxcount", type=int, default=100000, help="samples per shard at most")
    parser.add_argument("--max-bad-fraction", type=float, default=0.5,
                        help="stop when more than this fraction of the images read is unreadable (default 0.5, as "
                             "the training loader's data.max_bad_fraction)")
    args = parser.parse_args(argv)

    if args.maxcount < 1 or args.maxsize <= 0:
        raise UserError("--maxcount and --maxsize must be positive")
    if not args.root.is_dir():
        raise UserError(f"--root {args.root} is not a folder")
    archives = sorted(args.root.glob("*.zip"))
    if not archives:
        raise UserError(f"no *.zip archives in {args.root} (the output folder of python -m yfcc100m.download)")
    captions = read_captions(args.info)
    with ShardWriter(args.shards / SHARD_PATTERN, args.maxcount, args.maxsize) as writer:
        counts = convert(archives, captions, writer, args.max_bad_fraction)
    skipped = ", ".join(f"{counts[why]} {why}" for why in SKIPPED)
    print(f"wrote {writer.total} samples in {len(writer.shards)} shard(s) to {args.shards}; skipped {skipped}")
    if not writer.total:
        raise UserError(
            f"no image of {args.root} matched a caption of {args.info}: its 'file' column must hold the zip member "
            f"paths without '{MEMBER_PREFIX}' (e.g. 000/abc/000abc....jpg)"
        )


if __name__ == "__main__":
    run_cli(main)
