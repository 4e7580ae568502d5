"""Entry-script glue: user mistakes become one line on stderr and a non-zero exit."""

import sys
from collections.abc import Callable

from utils.errors import UserError

EXIT_USER_ERROR = 2


def run_cli(main: Callable[[], object], debug: bool | None = None) -> None:
    """Run ``main()``; a ``UserError`` (or a missing file) prints ``error: <message>`` and exits with 2.

    ``debug`` (default: ``--debug`` in ``sys.argv``) re-raises instead, with the full traceback.
    """
    debug = "--debug" in sys.argv if debug is None else debug
    try:
        main()
    except (UserError, FileNotFoundError) as e:
        if debug:
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
