"""The one exception type for mistakes a user can fix (bad config key, missing file, wrong checkpoint), and the one
way to put an error's message on one line (``one_line``).

Entry scripts catch it and print its one-line message instead of a traceback (unless ``--debug``).
"""

import re

_WORKER_ERROR = re.compile(r"Caught (\w+) in DataLoader worker process \d+\.\nOriginal Traceback")


class UserError(Exception):
    """A problem with the user's input, explained in one line."""


def _original_message(text: str) -> str:
    """The message of an error that a DataLoader worker raised: torch raises it again in the main process with the
    worker's traceback as its message ('Caught UserError in DataLoader worker process 0. Original Traceback ...')."""
    caught = _WORKER_ERROR.match(text)
    if caught is None:
        return text
    original = re.search(rf"^(?:[\w.]+\.)?{caught[1]}: (.*)\Z", text, re.MULTILINE | re.DOTALL)
    return original[1] if original else text


def one_line(error: BaseException | str, limit: int | None = None) -> str:
    """An error message on one line: an OSError with a file as 'file: reason', else its lines joined with '; ' (a
    space after a heading's ':'), cut at ``limit`` characters; the exception's type when it says nothing."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"  # e.g. "out/log.txt: Permission denied"
    text = ""
    for line in (" ".join(line.split()) for line in _original_message(str(error)).splitlines()):
        if line:
            text += ("" if not text else " " if text.endswith(":") else "; ") + line
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return text or type(error).__name__
