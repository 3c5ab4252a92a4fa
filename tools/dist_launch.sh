#!/usr/bin/env bash
# torchrun for dist_train.sh and dist_test.sh: bash tools/dist_launch.sh NUM_PROCESSES SCRIPT ARGS...
# One process per GPU (or per CPU process without CUDA, on the gloo backend). Multi-node: set
# NNODES, NODE_RANK, MASTER_ADDR and PORT on every node; PYTHON picks the interpreter.
set -euo pipefail
NPROC=$1
shift
TOOLS=$(cd "$(dirname "$0")" && pwd)
exec "${PYTHON:-$(command -v python || command -v python3)}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" \
    --nproc_per_node="$NPROC" \
    "$TOOLS/$1" "${@:2}" --launcher pytorch
