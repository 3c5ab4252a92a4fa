#!/usr/bin/env bash
# How the distributed tools start their processes.
#   bash tools/dist_launch.sh NUM_PROCESSES SCRIPT ARGS...    torchrun, for dist_train/dist_test.sh
#   source tools/dist_launch.sh; run_until_stopped COMMAND ...  (slurm_train.sh runs srun with it)
# torchrun: one process per GPU (or per CPU process without CUDA, on the gloo backend).
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node; PYTHON picks the
# interpreter; MAX_RESTARTS (default 0) is torchrun's --max-restarts: after a worker dies, the
# whole group is restarted up to that many times (train.py then resumes from the last complete
# checkpoint); with restarts, set RDZV_ID too on multi-node runs (the same on every node).
# Either way SIGTERM or SIGUSR1 to this shell reaches the processes (through torchrun as SIGTERM;
# through srun as SIGUSR1, which slurm_train.sh sets in STOP_FORWARD_SIGNAL: srun answers a
# SIGTERM by killing its tasks), and when they stopped training at a checkpoint the status is 75
# (EXIT_STOPPED in convnext_backbone/cli.py), else the command's. See docs/cluster.md.
set -euo pipefail

run_until_stopped() {  # run_until_stopped COMMAND ARGS...: run it, pass on stop signals
    # The training processes write one line into this file once a signal stopped them at a
    # checkpoint: torchrun reports a signal as its own failure, not its workers' status, and srun
    # may report a task that it killed after another one had exited with 75. Callers whose
    # processes run on several nodes set it to a file that every node sees.
    if [ -z "${CONVNEXT_STOP_REPORT:-}" ]; then
        CONVNEXT_STOP_REPORT=$(mktemp "${TMPDIR:-/tmp}/convnext-stop.XXXXXX")
    fi
    export CONVNEXT_STOP_REPORT
    trap 'rm -f "$CONVNEXT_STOP_REPORT"' EXIT
    # bash runs a trap only between commands, so the command runs in the background and is waited
    # for; a signal that comes before it started is passed on once it has.
    _STOP_CHILD=''
    _STOP_PENDING=''
    trap '_forward_stop "${STOP_FORWARD_SIGNAL:-TERM}"' TERM USR1
    trap ':' INT  # Ctrl-C reaches the command's processes from the terminal; keep waiting
    "$@" &
    _STOP_CHILD=$!
    if [ -n "$_STOP_PENDING" ]; then _forward_stop "$_STOP_PENDING"; fi
    local status=0
    wait "$_STOP_CHILD" || status=$?
    while kill -0 "$_STOP_CHILD" 2>/dev/null; do  # wait returned early to run a trap
        status=0
        wait "$_STOP_CHILD" || status=$?
    done
    trap ':' TERM USR1  # the command is over: a late signal must not cut what follows short
    if [ "$status" -ne 0 ] && [ -s "$CONVNEXT_STOP_REPORT" ]; then
        echo "$(basename "$0"): $(cat "$CONVNEXT_STOP_REPORT")" >&2
        return 75
    fi
    return "$status"
}

_forward_stop() {
    if [ -n "$_STOP_CHILD" ]; then
        kill -s "$1" "$_STOP_CHILD" 2>/dev/null || true
    else
        _STOP_PENDING=$1
    fi
}

torchrun_main() {  # torchrun_main NUM_PROCESSES SCRIPT ARGS...
    local nproc=$1 tools
    shift
    tools=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    # torchrun forwards the signals of this list to its workers (--signals-to-handle; older torch
    # ignores the variable); slurm's --signal often sends SIGUSR1.
    export PET_SIGNALS_TO_HANDLE=${PET_SIGNALS_TO_HANDLE:-SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1}
    # Seconds torchrun waits for its workers after forwarding a signal before SIGKILL (default
    # 30): enough to write a large checkpoint.
    export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-120}
    local rdzv=(--node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}"
                --master_port="${PORT:-29500}")
    if [ "${MAX_RESTARTS:-0}" != 0 ]; then
        # The workers' process group lives in torchrun's store without a per-attempt prefix
        # (_create_c10d_store in torch/distributed/rendezvous.py), so a restarted group could
        # read the dead group's keys: the static rendezvous above keeps one store for every
        # attempt (elastic/rendezvous/static_tcp_rendezvous.py). The c10d rendezvous of
        # torchrun's "Fault tolerant" example, with its store sharing turned off, has rank 0
        # start a new store on a free port in each round (elastic/rendezvous/dynamic_rendezvous.py).
        rdzv=(--rdzv-backend=c10d --rdzv-endpoint="${MASTER_ADDR:-127.0.0.1}:${PORT:-29500}"
              --rdzv-id="${RDZV_ID:-convnext-${PORT:-29500}}")
        export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=${TORCH_DISABLE_SHARE_RDZV_TCP_STORE:-1}
    fi
    run_until_stopped "${PYTHON:-$(command -v python || command -v python3)}" \
        -m torch.distributed.run \
        --nnodes="${NNODES:-1}" \
        "${rdzv[@]}" \
        --nproc_per_node="$nproc" \
        --max-restarts="${MAX_RESTARTS:-0}" \
        "$tools/$1" "${@:2}" --launcher pytorch
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    torchrun_main "$@"
fi
