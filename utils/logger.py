"""One logger for the project: console (rank 0 only, unless asked) and ``<output>/log.txt``."""

import logging
import sys
from pathlib import Path

from utils.distributed import get_rank

_FORMAT = "[%(asctime)s %(name)s] (%(filename)s %(lineno)d) %(levelname)s: %(message)s"


def get_logger(output: str | Path | None = None, name: str = "groupvit", all_ranks: bool = False) -> logging.Logger:
    """The project logger; with ``output`` it also appends to ``<output>/log.txt`` (rank 0).

    Calling it again with another ``output`` adds that file; handlers are never duplicated.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = True  # our handlers print; the root logger normally has none (pytest attaches caplog there)
    rank = get_rank()
    if not any(getattr(h, "_groupvit_console", False) for h in logger.handlers) and (rank == 0 or all_ranks):
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S"))
        console._groupvit_console = True
        logger.addHandler(console)
    if output is not None and rank == 0:
        path = Path(output) / "log.txt"
        if not any(getattr(h, "baseFilename", None) == str(path.resolve()) for h in logger.handlers):
            path.parent.mkdir(parents=True, exist_ok=True)
            file_handler = logging.FileHandler(path, mode="a")
            file_handler.setFormatter(logging.Formatter(_FORMAT))
            logger.addHandler(file_handler)
    return logger
