#!/usr/bin/env bash
# The test command: set up .venv (if needed), lint, then run the whole test suite.
# Extra arguments go to pytest, e.g. `./tools/run_tests.sh -k tokenizer`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
./tools/setup_env.sh
.venv/bin/python -m ruff check .
exec .venv/bin/python -m pytest "$@"
