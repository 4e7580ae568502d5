"""Give img2dataset's shards the names the configs expect: 00000.tar -> <prefix>000000.tar (a portable `rename -d`).

    python convert_dataset/rename_shards.py local_data/gcc3m_shards --prefix gcc-train- [--dry-run]

Renames every ``<digits>.tar`` in the folder to ``<prefix><index as 6 digits>.tar`` (the width of the configs' brace
patterns, e.g. ``gcc-train-{000000..00436}.tar``), whatever zero padding img2dataset used (``--oom_shard_count``).
img2dataset's side files of a shard, ``<digits>_stats.json`` and ``<digits>.parquet``, get the same new stem; anything
else (run-level stats, wandb folders) is left alone. Nothing is renamed when any new name exists already or when two
files would get the same name. Finally it prints the ``prefix`` brace pattern for the config, the ``length`` (the sum
of the ``successes`` in the shards' stats files, when there are some) and any gap in the shard numbers.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repository root

from utils.cli import add_debug_flag, run_cli  # noqa: E402
from utils.errors import UserError  # noqa: E402

SHARD_FILE = re.compile(r"(\d+)(\.tar|_stats\.json|\.parquet)")
DIGITS = 6


def plan_renames(folder: Path, prefix: str) -> list[tuple[Path, Path]]:
    """(old, new) for every img2dataset shard file in ``folder``; raises UserError on any conflict."""
    renames = []
    for path in sorted(folder.iterdir()):
        match = SHARD_FILE.fullmatch(path.name)
        if match and path.is_file():
            renames.append((path, folder / f"{prefix}{int(match[1]):0{DIGITS}d}{match[2]}"))
    if not any(old.suffix == ".tar" for old, _ in renames):
        raise UserError(f"no img2dataset shards (00000.tar, ...) in {folder}; already renamed?")
    targets = [new for _, new in renames]
    if len(set(targets)) != len(targets):
        raise UserError(f"two files of {folder} would get the same name (e.g. 0001.tar and 00001.tar)")
    taken = [new for new in targets if new.exists()]
    if taken:
        raise UserError(f"{taken[0]} exists already; refusing to overwrite (nothing renamed)")
    return renames


def config_hint(renames: list[tuple[Path, Path]], prefix: str) -> str:
    """The config's ``prefix`` (and ``length`` when img2dataset's stats say it) for these shards; names gaps."""
    indices = sorted(int(SHARD_FILE.fullmatch(old.name)[1]) for old, _ in renames if old.suffix == ".tar")
    hint = f"config: prefix: {prefix}{{{indices[0]:0{DIGITS}d}..{indices[-1]:0{DIGITS}d}}}.tar"
    stats = [old for old, _ in renames if old.name.endswith("_stats.json")]
    try:
        successes = sum(int(json.loads(path.read_text())["successes"]) for path in stats)
        hint += f", length: {successes} (successes in {len(stats)} _stats.json files)" if stats else ""
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not img2dataset's stats: no length hint
    gaps = sorted(set(range(indices[0], indices[-1] + 1)) - set(indices))
    if gaps:
        hint += f"\nwarning: {len(gaps)} shard(s) of that range are missing (e.g. {gaps[0]}); the loaders need them all"
    return hint


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_debug_flag(parser)
    parser.add_argument("folder", type=Path, help="img2dataset's output folder")
    parser.add_argument("--prefix", required=True, help="e.g. gcc-train-, gcc-conceptual-12m-, redcap12m-")
    parser.add_argument("--dry-run", action="store_true", help="only print what would be renamed")
    args = parser.parse_args(argv)

    if not args.folder.is_dir():
        raise UserError(f"shard folder {args.folder} not found")
    if not args.prefix or "/" in args.prefix or "\\" in args.prefix:
        raise UserError(f"--prefix {args.prefix!r} must be a non-empty file name prefix")
    renames = plan_renames(args.folder, args.prefix)
    hint = config_hint(renames, args.prefix)
    for old, new in renames:
        if args.dry_run:
            print(f"{old.name} -> {new.name}")
        else:
            old.rename(new)
    print(f"{'would rename' if args.dry_run else 'renamed'} {len(renames)} files in {args.folder}")
    print(hint)


if __name__ == "__main__":
    run_cli(main)
