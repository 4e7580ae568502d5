"""Files that appear complete or not at all, and webdataset tar shards built in memory.

A file is written under a hidden temporary name next to its final one, flushed to disk and only then renamed
(``os.replace``, atomic on POSIX), so a reader or a resumed run never sees it half-written. An exception (Ctrl-C
included) deletes the temporary file; a killed process can leave one behind, never a truncated final file.
Checkpoints (``utils.checkpoint.save_checkpoint``), the convert tools' shards (``convert_dataset.shard_writer``),
the synthetic data and the tests' fixtures all write this way.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import webdataset as wds


def partial_path(final: Path) -> Path:
    """The default temporary name of ``final`` while it is written: ``.<name>.partial`` in the same folder."""
    return final.with_name(f".{final.name}.partial")


def fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (POSIX); a platform that cannot open folders skips it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_output(final: str | os.PathLike, tmp: Path | None = None, durable: bool = True) -> Iterator[Path]:
    """Yield the temporary path to write ``final`` under (default :func:`partial_path`); when the block succeeds
    it is renamed over ``final``, when it fails it is deleted (a previous ``final`` stays as it was).

    ``durable``: fsync the file before the rename and the folder after it, so that the new ``final`` survives a
    power cut too (off for data that is cheap to regenerate and written by the thousand).
    """
    final = Path(final)
    tmp = tmp or partial_path(final)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_folder(final.parent)


def write_atomic(final: str | os.PathLike, data: bytes | str, durable: bool = True) -> None:
    """Write ``data`` (text as UTF-8) to ``final`` through :func:`atomic_output`."""
    with atomic_output(final, durable=durable) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def tar_bytes(samples: Sequence[Mapping[str, str | bytes]], mtime: float | None = None) -> bytes:
    """A webdataset tar of ``samples`` (``__key__`` plus extension -> bytes), each sample's members in extension
    order; ``mtime`` fixes the members' time (reproducible bytes), else it is the current time."""
    buf = io.BytesIO()
    with wds.TarWriter(buf, encoder=False, mtime=mtime) as tar:
        for sample in samples:
            tar.write(dict(sample))
    return buf.getvalue()


def write_tar(final: str | os.PathLike, samples: Sequence[Mapping[str, str | bytes]],
              mtime: float | None = None, durable: bool = True) -> None:
    """A webdataset shard of ``samples`` (see :func:`tar_bytes`), written atomically."""
    write_atomic(final, tar_bytes(samples, mtime), durable=durable)
