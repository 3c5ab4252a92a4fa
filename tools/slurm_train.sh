#!/usr/bin/env bash
# Training on a Slurm cluster with srun, one task per GPU:
#   [GPUS=16 GPUS_PER_NODE=8] bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR \
#       [train.py arguments ...]
# GPUS (default 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5) and SRUN_ARGS (extra srun options) come
# from the environment.
# Preemption and time limits (docs/cluster.md): SIGUSR1 to the tasks (scancel --signal=USR1,
# sbatch --signal=USR1@300), SIGUSR1 or SIGTERM to this script (sbatch --signal=B:USR1@300; this
# script passes either on to srun as SIGUSR1), or the SIGTERM with which Slurm ends a job
# (scontrol requeue, preemption, scancel, the time limit) stops training at a checkpoint of the
# current iteration, and every task exits with 75 (EXIT_STOPPED in convnext_backbone/cli.py).
# When the job still runs (a signal ahead of the time limit, not Slurm ending it) and is a
# requeueable batch job (sbatch --requeue), this script then runs `scontrol requeue
# $SLURM_JOB_ID`; the requeued job (SLURM_RESTART_COUNT > 0) continues from that checkpoint by
# itself. The script exits with srun's status. Tested against a real one-node Slurm 22.05
# (tests/test_cluster.py, tools/slurm_cluster.sh).
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py arguments ...]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
shift 4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
TOOLS=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
EXIT_STOPPED=75
# The tasks' report of a stop (run_until_stopped) goes into the work dir: every node sees it.
mkdir -p "$WORK_DIR"
CONVNEXT_STOP_REPORT="$(cd "$WORK_DIR" && pwd)/.stop_report.$$"
export CONVNEXT_STOP_REPORT

# run_until_stopped passes SIGTERM and SIGUSR1 sent to this shell (sbatch --signal=B:USR1@300) to
# srun as SIGUSR1, which srun forwards to its tasks (srun(1), SIGNALS AND ESCAPE SEQUENCES); srun
# answers a SIGTERM of its own with "forcing job termination" and SIGKILL of the tasks. It
# returns 75 when the tasks stopped at a checkpoint; srun itself returns the highest exit status
# of its tasks, or 128 + the signal of a task that a signal ended (srun(1), RETURN VALUE).
# shellcheck source=tools/dist_launch.sh
source "$TOOLS/dist_launch.sh"
STOP_FORWARD_SIGNAL=USR1
status=0
# shellcheck disable=SC2086  # SRUN_ARGS holds several options
run_until_stopped srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    "$PYTHON" -u "$TOOLS/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher=slurm "$@" \
    || status=$?

if [ "$status" -eq "$EXIT_STOPPED" ]; then
    me=$(basename "$0")
    job=$(scontrol show job "${SLURM_JOB_ID:-none}" 2>/dev/null || true)
    state=$(sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' <<<"$job" | head -n 1)
    if ! [[ "$job" =~ (^|[[:space:]])BatchFlag=1([[:space:]]|$) ]]; then
        echo "$me: training stopped at a checkpoint; run the same command with --resume to" \
            "continue (in a batch job submitted with --requeue it is requeued)"
    elif ! [[ "$job" =~ (^|[[:space:]])Requeue=1([[:space:]]|$) ]]; then
        echo "$me: training stopped at a checkpoint; job $SLURM_JOB_ID is not requeueable" \
            "(sbatch --requeue): submit it again with --resume to continue"
    elif [ "$state" != RUNNING ]; then
        # Slurm itself ends the job (scontrol requeue, preemption, scancel, the time limit) and
        # decides whether it comes back: a cancel stays a cancel
        echo "$me: training stopped at a checkpoint; Slurm ends job $SLURM_JOB_ID" \
            "(JobState=${state:-unknown}), so this script does not requeue it"
    else
        echo "$me: training stopped at a checkpoint; requeueing job $SLURM_JOB_ID"
        scontrol requeue "$SLURM_JOB_ID" || echo "$me: scontrol requeue $SLURM_JOB_ID failed" >&2
    fi
fi
exit "$status"
