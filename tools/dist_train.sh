#!/usr/bin/env bash
# Distributed training with torchrun, one process per GPU (gloo on CPU without CUDA):
#   bash tools/dist_train.sh CONFIG NUM_PROCESSES [--max-restarts N] [train.py arguments ...]
# --max-restarts N: when a process dies, torchrun restarts the group up to N times and the run
# continues from the last complete checkpoint (default: $MAX_RESTARTS, else 0: the run ends).
# Exit status 75: a signal stopped training at a checkpoint; run again with --resume.
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node. See docs/cluster.md.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG NUM_PROCESSES [--max-restarts N] [train.py arguments ...]" >&2
    exit 2
fi
CONFIG=$1
NPROC=$2
shift 2
MAX_RESTARTS=${MAX_RESTARTS:-0}
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --max-restarts|--max_restarts) MAX_RESTARTS=${2-}; shift $(($# > 1 ? 2 : 1)) ;;
        --max-restarts=*|--max_restarts=*) MAX_RESTARTS=${1#*=}; shift ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
case "$MAX_RESTARTS" in
    ''|*[!0-9]*) echo "$0: --max-restarts '$MAX_RESTARTS': use a whole number >= 0" >&2; exit 2 ;;
esac
MAX_RESTARTS=$MAX_RESTARTS exec bash "$(dirname "$0")/dist_launch.sh" "$NPROC" train.py "$CONFIG" \
    ${ARGS[@]+"${ARGS[@]}"}
