"""Ctrl-C (SIGINT) and SIGTERM stop every command within seconds, with one line saying where and how to go on.

``utils.cli.run_cli`` installs the handlers (``handling_stop_signals``). The first signal raises ``Interrupted`` (a
``KeyboardInterrupt``) in the main thread at once; whatever exception the stop then causes (a DataLoader worker
gone, a peer rank gone) is reported as the interruption: ``run_cli`` calls ``exit_stopped``, which prints
``stop_line()`` and exits 130 (SIGINT) or 143 (SIGTERM). Outputs are written atomically (checkpoints, shards), so a
stop leaves complete files only.

- A second signal more than ``REPEAT_WINDOW_S`` after the first exits at once (the same press delivered twice, by
  the terminal to the process group and by torchrun to its workers, counts once).
- If the stop itself takes longer than ``STOP_DEADLINE_S`` (e.g. a collective that waits for a rank that is gone),
  the process exits anyway.
- Forked children (DataLoader and Pool workers) ignore SIGINT: the main process shuts them down (it drops the
  stopped frames, so their loaders close), so none dies while handing over a batch. SIGTERM ends them as by default.
  Both are set for the kernel at fork, not by a Python handler: a Python handler runs only between bytecodes, so a
  signal that lands just before a blocking call (a worker entering its queue's lock as ``Pool.terminate`` signals it)
  would wait for a wake-up that never comes. A worker whose receiver leaves mid-handshake (the main process stopping
  while it fetches a shared tensor from the worker) does not print the resource-sharer thread's traceback: the main
  process reports the stop, once.

A raise that lands inside a callback whose exceptions Python ignores (an import lock's weakref callback, an at-fork
hook, a ``__del__``) is delivered again right after it; other errors in such callbacks after a stop are its
consequences and are not printed. Commands say what they are doing with ``now_doing`` (e.g.
'training epoch 3, step 5/10'), which also raises ``Interrupted`` once a stop was requested, and how to continue in
``progress.resume`` (e.g. 'the last complete checkpoint is out/checkpoint.pth: ...', which
``progress.checkpoint_saved`` writes); the stop line reports both. A training run holds ``progress`` in its state
and calls its methods.
"""

from __future__ import annotations

import functools
import gc
import logging
import multiprocessing
import multiprocessing.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import resource_sharer
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOP_DEADLINE_S = 10.0
REPEAT_WINDOW_S = 0.5
REDELIVER_AFTER_S = 0.05


@dataclass
class Progress:
    """What the command is doing, and how to continue after a stop (both for the stop line)."""

    doing: str = "starting"
    resume: str = ""

    def now_doing(self, doing: str) -> None:
        """Record what the command is doing; raise ``Interrupted`` if a stop was requested."""
        self.doing = doing
        if _state.signum is not None and not _state.exiting and os.getpid() == _state.owner:
            raise Interrupted(_state.signum)

    def checkpoint_saved(self, checkpoint: str | os.PathLike, auto_resume: bool) -> None:
        """The run's last complete checkpoint is ``checkpoint``: say how to resume from it."""
        again = "rerun the same command (checkpoint.auto_resume) or pass" if auto_resume else "pass"
        self.resume = f"the last complete checkpoint is {checkpoint}: to resume, {again} --resume {checkpoint}"


@dataclass
class _StopState:
    owner: int = 0  # the pid that installed the handlers
    signum: int | None = None  # the first stop signal received
    at: float = 0.0  # when (time.monotonic)
    redeliver: bool = False  # the Interrupted was swallowed: raise it again when the signal comes back
    exiting: bool = False  # exit_stopped has begun: nothing is raised any more


progress = Progress()
_state = _StopState()


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by the first SIGINT or SIGTERM."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(signum: int) -> int:
    """The shell's code for a process stopped by ``signum``: 128 + the signal number (130, 143)."""
    return 128 + signum


def stop_requested() -> int | None:
    """The first stop signal received, or None."""
    return _state.signum


def stop_line() -> str:
    name = signal.Signals(_state.signum or signal.SIGINT).name
    resume = progress.resume or "there is nothing to resume from"
    return f"interrupted ({name}) while {progress.doing}; {resume}"


def now_doing(doing: str) -> None:
    """``progress.now_doing``: record what the command is doing (for the stop line); raise ``Interrupted`` if a stop
    was requested."""
    progress.now_doing(doing)


def exit_stopped(error: BaseException, signum: int) -> None:
    """End a stopped process: close what only the stopped frames held, print the stop line, exit 128 + ``signum``.

    Child processes (DataLoader workers) are terminated; the tracebacks of ``error`` (and the exceptions chained to
    it) are dropped and collected, so that DataLoader iterators close now; logs are flushed; the
    interpreter's own teardown, which takes seconds for torch's modules on a busy machine, is skipped.
    """
    _state.exiting = True
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__traceback__ = None
        error = error.__cause__ or error.__context__
    # multiprocessing's own exit handler marks the interpreter as exiting before it ends the children, so that its
    # resource-sharer thread (which hands shared tensors to DataLoader workers) stays quiet when a dying worker drops
    # a connection mid-handshake; os._exit below skips that handler, so mark it here, then end the children
    multiprocessing.util._exiting = True
    for child in multiprocessing.active_children():  # a worker still serving a shared tensor to this
        child.terminate()                              # process would print a traceback when gc closes the pipe
    gc.collect()
    logging.shutdown()
    _exit_now(stop_line(), exit_code(signum))


def _exit_now(message: str, code: int | None = None) -> None:
    """Print ``message`` (rank 0 only) and end the process at once."""
    if os.environ.get("RANK", "0") == "0":
        print(message, file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(exit_code(_state.signum or signal.SIGINT) if code is None else code)


def _handle(signum: int, frame: object) -> None:
    if os.getpid() != _state.owner:  # a child forked outside Python's fork hooks: its main process stops it
        return
    if _state.redeliver:  # the signal sent again by _unraisable, not a second press
        _state.redeliver = False
        if not _state.exiting:
            raise Interrupted(_state.signum)
        return
    now = time.monotonic()
    if _state.signum is None:
        _state.signum, _state.at = signum, now
        deadline = threading.Timer(STOP_DEADLINE_S, _exit_now,
                                   args=(f"{stop_line()} (forced: the stop took over {STOP_DEADLINE_S:g} s)",))
        deadline.daemon = True
        deadline.start()
        raise Interrupted(signum)
    if now - _state.at > REPEAT_WINDOW_S:
        _exit_now(f"interrupted again ({signal.Signals(signum).name}): exiting at once, while {progress.doing}")


def _unraisable(hook_args: Any, previous: Callable[[Any], object]) -> None:
    """``sys.unraisablehook``: an ``Interrupted`` raised inside a callback whose exceptions Python ignores (an
    import lock's weakref callback, an at-fork hook, a ``__del__``) is delivered again right after it, silently.
    Once a stop was requested, other such errors are its consequences (e.g. the ``__del__`` of a DataLoader
    iterator that the stop interrupted while it started its workers) and are not printed: the stop line reports."""
    if os.getpid() != _state.owner:
        previous(hook_args)
    elif isinstance(hook_args.exc_value, Interrupted):
        _state.redeliver = True  # a moment later, from another thread: the handler then runs after this callback
        resend = threading.Timer(REDELIVER_AFTER_S, os.kill, args=(os.getpid(), hook_args.exc_value.signum))
        resend.daemon = True
        resend.start()
    elif _state.signum is None:
        previous(hook_args)


def _in_forked_child() -> None:
    """At fork, in a child of the process that handles the stop signals (a DataLoader or Pool worker): SIGINT ignored
    and SIGTERM as by default, for the kernel; a connection error in the thread that serves this worker's shared
    tensors (its receiver went away mid-handshake) is not printed."""
    if _state.owner != os.getppid() or signal.getsignal(signal.SIGTERM) is not _handle:
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, traceback: Any) -> None:
        serving = getattr(threading.current_thread(), "_target", None)  # set while the thread runs
        if issubclass(kind, EOFError | ConnectionError) and \
                isinstance(getattr(serving, "__self__", None), resource_sharer._ResourceSharer):
            return
        previous(kind, value, traceback)

    sys.excepthook = hook


os.register_at_fork(after_in_child=_in_forked_child)


@contextmanager
def handling_stop_signals() -> Iterator[None]:
    """Handle SIGINT and SIGTERM in this process as described above during the block (main thread only; elsewhere
    nothing changes); the previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    previous_hook = sys.unraisablehook
    _state.owner, _state.signum, _state.redeliver, _state.exiting = os.getpid(), None, False, False
    sys.unraisablehook = functools.partial(_unraisable, previous=previous_hook)
    for signum in STOP_SIGNALS:
        signal.signal(signum, _handle)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = previous_hook
