"""One run per output folder: a run holds an exclusive lock on ``<output>/run.lock`` while it works there.

The lock is the kernel's (``fcntl.flock``): it is released whenever the process ends, however it ends (a crash or
``kill -9`` included), so a lock file left behind by a dead process never blocks a new run. The file records the
holder (pid, host, start time, command line) for the refusal message. Under torch.distributed rank 0 takes the lock
and every rank learns the outcome, so a refused run stops on every rank.

A forked child (a DataLoader worker) closes its copy of the lock's descriptor at once: a flock is held until every
copy is closed, and a worker outlives a killed run by up to a few seconds (until it sees its parent gone), which
would refuse a rerun started at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from utils.cli import make_output_dir
from utils.distributed import all_reduce_sum, get_rank, is_dist
from utils.errors import UserError

LOCK_NAME = "run.lock"
_held: dict[int, tuple[int, int]] = {}  # this process's lock descriptors -> (device, inode) of their file


def _file_id(fd: int) -> tuple[int, int]:
    """(device, inode) of the file that ``fd`` is open on."""
    stat = os.fstat(fd)
    return stat.st_dev, stat.st_ino


def _close_in_child() -> None:
    for fd, file in _held.items():
        with contextlib.suppress(OSError):
            if _file_id(fd) == file:  # still the lock file's descriptor
                os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


def _holder() -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    command = " ".join(shlex.quote(arg) for arg in [Path(sys.executable).name, *sys.argv])
    return f"pid {os.getpid()} on {socket.gethostname()}, started {started}: {command}"


def acquire(folder: str | os.PathLike) -> int | None:
    """Lock ``folder`` for this process; returns the lock's file descriptor (kept open while the run lasts; ``release``
    it), or None when another process holds it."""
    path = Path(folder) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, (_holder() + "\n").encode())
    _held[fd] = _file_id(fd)
    return fd


def release(fd: int) -> None:
    """Release a lock taken by ``acquire``."""
    _held.pop(fd, None)
    os.close(fd)


def describe_holder(folder: str | os.PathLike) -> str:
    try:
        text = (Path(folder) / LOCK_NAME).read_text().strip()
    except OSError:
        text = ""
    return text or "another process"


@contextmanager
def hold_run_lock(folder: str | os.PathLike, device: torch.device | None = None) -> Iterator[None]:
    """Create the output folder and hold its lock for the block (rank 0 under torch.distributed; ``device``: where
    its tensors live); a UserError naming the other process on every rank when another run holds it."""
    folder = make_output_dir(folder)
    fd = acquire(folder) if get_rank() == 0 else None
    refused = torch.tensor([float(get_rank() == 0 and fd is None)], device=device)
    if is_dist():
        all_reduce_sum(refused)
    if refused.item():
        raise UserError(f"another run is using the output folder {folder} ({describe_holder(folder)}); wait for it "
                        "to end, stop it, or choose another --output")
    try:
        yield
    finally:
        if fd is not None:
            release(fd)
