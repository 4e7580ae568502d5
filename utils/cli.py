"""Entry-script glue: user mistakes become one line on stderr and a non-zero exit; Ctrl-C and SIGTERM stop the command
with one line (``utils.interrupt``)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from utils import interrupt
from utils.errors import UserError, one_line

if TYPE_CHECKING:
    import torch

EXIT_USER_ERROR = 2
# Problems with the user's files and folders (a missing input, an output that is a file or not writable).
_FILE_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)
def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """``--debug``: full tracebacks instead of one-line errors (:func:`run_cli` reads it from ``sys.argv``)."""
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")


def run_cli(main: Callable[[], object], debug: bool | None = None) -> None:
    """Run ``main()``; a ``UserError`` (or a file problem: missing, not writable, a file where a folder should be)
    prints ``error: <message>`` and exits with 2.

    SIGINT and SIGTERM stop it (``utils.interrupt``): whatever exception follows the signal, one line says where it
    stopped and how to go on, and the exit code is 130 or 143. ``debug`` (default: ``--debug`` in ``sys.argv``)
    re-raises user errors instead, with the full traceback.
    """
    debug = "--debug" in sys.argv if debug is None else debug
    with interrupt.handling_stop_signals():
        try:
            main()
        except BaseException as e:
            signum = interrupt.stop_requested()
            if signum is None and isinstance(e, KeyboardInterrupt):  # raised by other means than our handler
                signum = signal.SIGINT
            if signum is not None:
                interrupt.exit_stopped(e, signum)
            if debug or not isinstance(e, (UserError, *_FILE_ERRORS)):
                raise
            print(f"error: {one_line(e)}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)


def make_output_dir(path: str | os.PathLike) -> Path:
    """Create the output folder ``path`` (and its parents); a one-line UserError when it cannot be one."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"cannot use {folder} as the output folder: it is a file") from None
    except OSError as e:
        raise UserError(f"cannot create the output folder {folder}: {e.strerror or e}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"the output folder {folder} is not writable")
    return folder


def pick_device(name: str | None) -> torch.device:
    """A ``--device`` value: cuda:0 when available unless named; a bad or unavailable name is a UserError."""
    import torch  # here, so that the convert tools, which use this module, start without torch

    if name is None:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"unknown --device {name!r}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available here (use --device cpu)")
    return device
