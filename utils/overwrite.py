"""A command never replaces what the user already has unless asked: before it writes anything, it looks for the
outputs it would replace (a checkpoint, a model folder, a generated world, results, pictures) and refuses in one line
naming the first, unless the user passed ``--overwrite``. Checked before any work starts, so a refused command
writes nothing.

Files a run keeps appending to or continues (``log.txt``, a training run's own checkpoints under auto-resume) are
not outputs in this sense; the run lock (``utils.run_lock``) keeps two runs out of one folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from utils.errors import UserError

FLAG = "--overwrite"


def add_overwrite_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """``--overwrite``: replace ``what`` when it exists already (default: refuse)."""
    parser.add_argument(FLAG, action="store_true", help=f"replace {what} if it exists already (default: refuse)")


def occupied(path: Path) -> bool:
    """``path`` holds something: a file, or a folder that is not empty."""
    return path.exists() and not (path.is_dir() and not any(path.iterdir()))


def refuse_to_overwrite(paths: Iterable[str | os.PathLike], what: str, overwrite: bool) -> None:
    """A UserError naming the first of ``paths`` that holds something (see :func:`occupied`), unless ``overwrite``.
    ``what``: what the command would replace, for the message (e.g. 'a checkpoint')."""
    taken = [Path(p) for p in paths if occupied(Path(p))]
    if taken and not overwrite:
        more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
        raise UserError(f"{taken[0]}{more} exists already: refusing to overwrite {what} that this command did not "
                        f"write; pass {FLAG} to replace it, or choose another output")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def replacing(paths: Iterable[str | os.PathLike]) -> Iterator[None]:
    """Replace ``paths`` (files or folders, in one folder) by what the block writes there: the existing ones are
    moved aside into a hidden folder first and deleted when the block succeeds; when it fails, what it wrote at
    ``paths`` is deleted and they are moved back, so a failed command leaves them as they were."""
    paths = [Path(p) for p in paths]
    present = [p for p in paths if p.exists()]
    if not present:
        yield
        return
    aside = Path(tempfile.mkdtemp(prefix=".replaced.", dir=present[0].parent))
    moved: list[Path] = []
    try:
        for path in present:
            os.replace(path, aside / path.name)
            moved.append(path)
        yield
    except BaseException:
        for path in paths:
            _remove(path)
        for path in moved:
            os.replace(aside / path.name, path)
        aside.rmdir()
        raise
    shutil.rmtree(aside)
