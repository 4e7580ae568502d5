#!/usr/bin/env bash
# Multi-node launcher on torchrun: run it once on every node, with that node's NODE_RANK.
#   tools/dist_mn_launch.sh SCRIPT CONFIG NODE_RANK NODES GPUS_PER_NODE MASTER_ADDR [args...]
#   e.g. tools/dist_mn_launch.sh main_group_vit.py configs/group_vit_gcc_yfcc_30e.yml 0 2 8 tcp://node0:29500
# MASTER_ADDR is the address of node 0: a bare host (node0, 10.0.0.1), host:port, or tcp://host[:port]
# ([v6addr]:port for IPv6). A port given there wins over PORT (default 29500). PYTHON as in dist_launch.sh.
set -euo pipefail
if [ "$#" -lt 6 ]; then
    echo "usage: $0 SCRIPT CONFIG NODE_RANK NODES GPUS_PER_NODE MASTER_ADDR [args...]" >&2
    exit 2
fi
SCRIPT=$1
CONFIG=$2
NODE_RANK=$3
NODES=$4
GPUS_PER_NODE=$5
ADDR=${6#tcp://}
shift 6
PORT=${PORT:-29500}
if [[ $ADDR =~ ^\[(.+)\]:([0-9]+)$ ]] || [[ $ADDR =~ ^([^:]+):([0-9]+)$ ]]; then
    HOST=${BASH_REMATCH[1]}
    PORT=${BASH_REMATCH[2]}
else
    HOST=${ADDR#\[}
    HOST=${HOST%\]}
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$root/.venv/bin/python" ]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python; fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
exec "$PYTHON" -m torch.distributed.run --nnodes="$NODES" --node_rank="$NODE_RANK" \
    --nproc_per_node="$GPUS_PER_NODE" --master_addr="$HOST" --master_port="$PORT" "$SCRIPT" --cfg "$CONFIG" "$@"
