#!/usr/bin/env bash
# Single-node launcher on torchrun: one process per GPU (or per CPU process group slot, with gloo).
#   tools/dist_launch.sh SCRIPT CONFIG GPUS [args...]
#   e.g. tools/dist_launch.sh main_group_vit.py configs/group_vit_gcc_yfcc_30e.yml 8 --tag run1
# Environment: PORT (rendezvous port, default 29500); PYTHON (default: the repository's .venv python if present).
set -euo pipefail
if [ "$#" -lt 3 ]; then
    echo "usage: $0 SCRIPT CONFIG GPUS [args...]" >&2
    exit 2
fi
SCRIPT=$1
CONFIG=$2
GPUS=$3
shift 3
PORT=${PORT:-29500}
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$root/.venv/bin/python" ]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python; fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m torch.distributed.run --nnodes=1 --nproc_per_node="$GPUS" --master_addr=127.0.0.1 \
    --master_port="$PORT" "$SCRIPT" --cfg "$CONFIG" "$@"
