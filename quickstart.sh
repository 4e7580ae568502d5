#!/usr/bin/env bash
# The main command: set up .venv (shared with the test command), generate the synthetic world, train a small
# GroupViT on it, evaluate zero-shot segmentation and classification, draw pictures. Flags: ./quickstart.sh --help
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"
./tools/setup_env.sh
exec .venv/bin/python tools/quickstart.py "$@"
