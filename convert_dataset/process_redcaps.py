"""Merge the RedCaps annotation JSONs into parquet file(s) with the columns URL and TEXT, for img2dataset.

    python convert_dataset/process_redcaps.py annotations redcaps12m_meta/redcaps12m.parquet [--num-split 16]

Reads every ``*.json`` in the annotations folder (in name order); each item of its ``annotations`` list gives one
record ``{URL: item['url'], TEXT: item['caption']}``. The records are shuffled (``random.seed(42)`` order) and
written to the output, or with ``--num-split N`` to ``<name>_part0.parquet`` ... ``<name>_part{N-1}.parquet``, part i
holding every N-th record from the i-th on. Give img2dataset the output folder with ``--input_format parquet``.
An existing output is refused (``--overwrite`` replaces it), and so are annotations with fewer records than files.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repository root

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from tqdm import tqdm  # noqa: E402

from utils.atomic_files import atomic_output  # noqa: E402
from utils.cli import add_debug_flag, run_cli  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.overwrite import add_overwrite_flag, refuse_to_overwrite  # noqa: E402

SEED = 42


def read_annotations(path: Path) -> list[tuple[str, str]]:
    """(url, caption) for every item of one RedCaps annotation file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None
    items = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise UserError(f"{path} has no 'annotations' list; is it a RedCaps annotation file?")
    records = []
    for i, item in enumerate(items):
        if not (isinstance(item, dict) and isinstance(item.get("url"), str) and isinstance(item.get("caption"), str)):
            raise UserError(f"{path}: annotations[{i}] has no string 'url' and 'caption'")
        records.append((item["url"], item["caption"]))
    return records


def part_paths(output: Path, num_split: int | None) -> list[Path]:
    if num_split is None:
        return [output]
    return [output.with_name(f"{output.stem}_part{i}{output.suffix}") for i in range(num_split)]


def write_parquet(records: list[tuple[str, str]], path: Path) -> None:
    urls, texts = zip(*records, strict=True) if records else ((), ())
    table = pa.table({"URL": pa.array(urls, pa.string()), "TEXT": pa.array(texts, pa.string())})
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_debug_flag(parser)
    parser.add_argument("annotations", type=Path, help="folder with RedCaps' <subreddit>_<year>.json files")
    parser.add_argument("output", type=Path, help="output .parquet file (its stem names the parts with --num-split)")
    parser.add_argument("--num-split", type=int, help="write this many parquet files instead of one")
    add_overwrite_flag(parser, "the parquet file(s)")
    args = parser.parse_args(argv)

    if not args.annotations.is_dir():
        raise UserError(f"annotations folder {args.annotations} not found")
    if args.output.suffix != ".parquet":
        raise UserError(f"the output {args.output} must end with .parquet (img2dataset reads *.parquet)")
    if args.num_split is not None and args.num_split < 1:
        raise UserError("--num-split must be at least 1")
    files = sorted(args.annotations.glob("*.json"))
    if not files:
        raise UserError(f"no *.json files in {args.annotations} (unzip redcaps_v1.0_annotations.zip first)")

    paths = part_paths(args.output, args.num_split)
    refuse_to_overwrite(paths, "a parquet file", args.overwrite)
    records = [record for path in tqdm(files, unit="file", desc="redcaps") for record in read_annotations(path)]
    if len(records) < len(paths):
        raise UserError(f"{len(records)} annotation(s) in {len(files)} file(s) of {args.annotations}: not enough for "
                        f"{len(paths)} parquet file(s); nothing written")
    random.Random(SEED).shuffle(records)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(paths):
        write_parquet(records[i :: len(paths)], path)
    where = paths[0] if len(paths) == 1 else f"{paths[0]} ... {paths[-1].name}"
    print(f"wrote {len(records)} records from {len(files)} annotation file(s) to {where}")


if __name__ == "__main__":
    run_cli(main)
