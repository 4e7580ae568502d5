"""Numbered webdataset tar shards for the conversion tools, streamed to disk one sample at a time.

``ShardWriter`` writes samples into shards named ``pattern % index``. Each shard is written to a hidden temporary
file next to it (``utils.atomic_files.partial_path``), flushed to disk, and only then renamed to its final name.
An exception (Ctrl-C included) deletes the unfinished temporary file; a killed process can leave one behind, but
never a truncated ``.tar`` under a name the training configs match. One file at a time:
``utils.atomic_files.atomic_output``.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import IO, Any

import webdataset as wds

from utils import interrupt
from utils.atomic_files import fsync_folder, partial_path
from utils.errors import UserError


class ShardWriter:
    """Write samples (``{'__key__': ..., 'jpg': bytes, 'text': str | 'cls': int}``) into numbered tar shards.

    A new shard starts when the current one holds ``maxcount`` samples or ``maxsize`` bytes, or after
    ``next_shard()``. Use it as a context manager: a normal exit completes the last shard, an exception discards it.
    Refuses to start when the folder already holds shards matching ``pattern`` (they would be mixed with new ones).
    """

    def __init__(self, pattern: str | Path, maxcount: int | None = None, maxsize: float | None = None) -> None:
        self.pattern = Path(pattern)
        self.maxcount = maxcount
        self.maxsize = maxsize
        self.shards: list[Path] = []  # completed shards, in order
        self.total = 0
        self._file: IO[bytes] | None = None
        self._tar: wds.TarWriter | None = None
        self._partial: Path | None = None  # the temporary file of the shard being written, once it may exist
        self._count = 0
        self._size = 0
        folder = self.pattern.parent
        existing = sorted(folder.glob(re.sub(r"%0?\d*d", "*", self.pattern.name))) if folder.is_dir() else []
        if existing:
            raise UserError(
                f"{folder} already holds {len(existing)} shard(s) like {existing[0].name}; "
                "remove them or write to another folder"
            )
        folder.mkdir(parents=True, exist_ok=True)
        interrupt.progress.resume = f"no shard was completed in {folder}"

    def _final_path(self) -> Path:
        return self.pattern.with_name(self.pattern.name % len(self.shards))

    def write(self, sample: dict[str, Any]) -> None:
        if self._tar is not None and (
            (self.maxcount is not None and self._count >= self.maxcount)
            or (self.maxsize is not None and self._size >= self.maxsize)
        ):
            self.next_shard()
        if self._tar is None:
            interrupt.now_doing(f"writing {self._final_path()}")
            # Named before it is created: a stop that lands inside open() or TarWriter() still finds it to delete.
            self._partial = partial_path(self._final_path())
            self._file = open(self._partial, "wb")  # closed by next_shard/abort
            self._tar = wds.TarWriter(self._file)
            self._count = self._size = 0
        self._size += self._tar.write(sample)
        self._count += 1
        self.total += 1

    def next_shard(self) -> None:
        """Complete the current shard (if any samples went into it); the next sample starts a new one."""
        if self._tar is None or self._file is None:
            return
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self._final_path()
        os.replace(self._partial, final)
        fsync_folder(final.parent)
        self.shards.append(final)
        interrupt.progress.resume = (f"{len(self.shards)} complete shard(s) in {final.parent}, no partial one; a "
                                     "conversion cannot resume: remove them and rerun")
        self._tar = self._file = self._partial = None

    def abort(self) -> None:
        """Discard the shard being written, however far its start got; completed shards stay."""
        with contextlib.suppress(Exception):  # the file is deleted anyway; keep the error that caused the abort
            if self._tar is not None:
                self._tar.close()
        if self._file is not None:
            self._file.close()
        if self._partial is not None:
            self._partial.unlink(missing_ok=True)
        self._tar = self._file = self._partial = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.next_shard()
        else:
            self.abort()
