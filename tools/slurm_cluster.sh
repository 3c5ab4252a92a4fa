#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for tests/test_cluster.py and for trying the Slurm
# tools (docs/cluster.md) without a cluster:
#   bash tools/slurm_cluster.sh start [DIR]   install slurm-wlm and munge if missing (apt-get),
#                                             write the configuration into DIR, start munged,
#                                             slurmctld and slurmd, wait for the node to be idle
#   bash tools/slurm_cluster.sh env [DIR]     print `export SLURM_CONF=DIR/slurm.conf`:
#                                             eval "$(bash tools/slurm_cluster.sh env DIR)"
#   bash tools/slurm_cluster.sh logs [DIR]    the end of the daemons' logs
#   bash tools/slurm_cluster.sh stop [DIR]    cancel the jobs, stop the daemons, remove DIR
# DIR defaults to $SLURM_CLUSTER_DIR, else ${TMPDIR:-/tmp}/convnext-slurm. Run as root (slurmd
# starts the jobs' processes as their users); no systemd: the daemons run from DIR, with their
# own munge key and socket, state, logs and free ports, so they leave an installed Slurm alone.
# One node: NodeName=$(hostname -s) CPUs=$(nproc), 2 gpu GRES on /dev/null and /dev/zero (no
# GPU: the --gres=gpu:N of tools/slurm_train.sh is scheduled, the tasks run on the CPU), one
# partition "debug". Short waits, for tests: a requeued job may start again after
# SLURM_CLUSTER_CRED_EXPIRE + 1 s (default 5: AuthInfo cred_expire, Slurm's default 120) and
# KillWait is 10 s (Slurm's default 30). Exit status 3: Slurm is not installed and cannot be
# installed here, or this is not root. Tested with Debian 12's slurm-wlm 22.05.8 and munge 0.5.15.
set -euo pipefail
ME=$(basename "$0")
CMD=${1:-}
DIR=${2:-${SLURM_CLUSTER_DIR:-${TMPDIR:-/tmp}/convnext-slurm}}
PARTITION=debug
# seconds a requeued job waits before it may start again (slurm.conf(5) AuthInfo cred_expire;
# Slurm's default 120)
CRED_EXPIRE=${SLURM_CLUSTER_CRED_EXPIRE:-5}
NEEDED=(munged slurmctld slurmd sbatch srun scontrol sinfo squeue scancel)

die() { echo "$ME: $*" >&2; exit 1; }

missing_commands() {
    local cmd missing=()
    for cmd in "${NEEDED[@]}" mungekey; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
    done
    echo "${missing[*]}"
}

install_packages() {
    local missing
    missing=$(missing_commands)
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "$ME: Slurm is not installed ($missing missing) and cannot be installed here:" \
            "apt-get install slurm-wlm munge needs root on Debian/Ubuntu" >&2
        exit 3
    fi
    echo "$ME: installing slurm-wlm and munge (missing: $missing)"
    local log
    log=$(mktemp)
    # where no policy-rc.d forbids it, the packages start their own services (systemd or init
    # scripts, system socket and key): the daemons here use none of them
    if ! (export DEBIAN_FRONTEND=noninteractive
          apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge) \
            >"$log" 2>&1; then
        echo "$ME: apt-get install slurm-wlm munge failed: $(tail -n 1 "$log")" >&2
        rm -f "$log"
        exit 3
    fi
    rm -f "$log"
    missing=$(missing_commands)
    [ -z "$missing" ] || { echo "$ME: $missing still missing after apt-get" >&2; exit 3; }
}

port_in_use() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port_pair() {  # two consecutive ports nobody listens on, for slurmctld and slurmd
    local port
    for ((port = 6817; port < 7817; port += 2)); do
        if ! port_in_use "$port" && ! port_in_use $((port + 1)); then
            echo "$port"
            return
        fi
    done
    die "no free port pair in 6817-7816"
}

write_config() {
    local host cpus port
    host=$(hostname -s)
    cpus=$(nproc)
    port=$(free_port_pair)
    mkdir -p "$DIR/munge" "$DIR/state" "$DIR/spool"
    chmod 755 "$DIR" "$DIR/munge"  # every user's jobs talk to munged
    cat >"$DIR/slurm.conf" <<EOF
# Written by tools/slurm_cluster.sh: a one-node test cluster, see that script.
ClusterName=convnext-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=${CRED_EXPIRE}
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups (they need systemd or a writable cgroup tree): processes tracked by parent pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
GresTypes=gpu
JobRequeue=1
ReturnToService=2
# fast: pending jobs are looked at every second, a requeued job may start again at once, and
# SIGKILL follows SIGTERM after 10 s (time limit, scancel, scontrol requeue)
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1,sched_min_interval=100000
KillWait=10
MinJobAge=300
MessageTimeout=10
InactiveLimit=0
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus Gres=gpu:2 State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    # Slurm drops a gpu GRES without a device file; these two stand for 2 GPUs that the
    # scheduler counts (the tasks see CUDA_VISIBLE_DEVICES=0,1 and no GPU, and run on the CPU)
    printf 'Name=gpu File=/dev/null\nName=gpu File=/dev/zero\n' >"$DIR/gres.conf"
    # slurmd of 22.05 loads a cgroup plugin even where no plugin above uses it; with cgroup v2
    # it would ask systemd (dbus) for a scope
    printf 'CgroupPlugin=autodetect\nIgnoreSystemd=yes\n' >"$DIR/cgroup.conf"
}

start_munge() {
    mungekey -c -f -k "$DIR/munge/munge.key" >/dev/null
    chmod 600 "$DIR/munge/munge.key"
    munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
        --seed-file="$DIR/munge/munged.seed" \
        || die "munged did not start: $(tail -n 3 "$DIR/munge/munged.log" 2>/dev/null)"
}

node_state() {
    sinfo --noheader --nodes="$(hostname -s)" --format=%t 2>/dev/null || true
}

start() {
    install_packages
    if [ "$(id -u)" != 0 ]; then  # as exit status 3: no cluster can be started here
        echo "$ME: run as root: slurmd starts each job's processes as its user" >&2
        exit 3
    fi
    if [ -e "$DIR/slurm.conf" ]; then
        die "$DIR already holds a cluster: run \`bash $0 stop $DIR\` first"
    fi
    mkdir -p "$DIR"
    touch "$DIR/.slurm_cluster"  # `stop` removes only folders this script made
    write_config
    export SLURM_CONF=$DIR/slurm.conf
    start_munge
    # -i: ignore the state of an earlier cluster (there is none in a new DIR)
    slurmctld -i -f "$SLURM_CONF" || die "slurmctld did not start: $(tail -n 3 "$DIR/slurmctld.log")"
    slurmd -f "$SLURM_CONF" || die "slurmd did not start: $(tail -n 3 "$DIR/slurmd.log")"
    local deadline=$((SECONDS + 60)) state=''
    while [ $SECONDS -lt $deadline ]; do
        state=$(node_state)
        case "$state" in idle|inval|drain*) break ;; esac
        sleep 0.5
    done
    if [ "$state" != idle ]; then
        logs >&2
        die "the node is '${state:-not known}' after 60 s, not idle"
    fi
    echo "$ME: one-node cluster up: $(hostname -s), $(nproc) CPUs, partition $PARTITION;" \
        "export SLURM_CONF=$SLURM_CONF"
}

stop_pid_file() {  # stop_pid_file FILE NAME: SIGTERM, then SIGKILL after 10 s
    local pid
    [ -s "$1" ] || return 0
    pid=$(cat "$1")
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "$ME: $2 ($pid) still runs 10 s after SIGTERM: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
}

stop() {
    [ -e "$DIR/.slurm_cluster" ] || die "$DIR is not a cluster of this script"
    export SLURM_CONF=$DIR/slurm.conf
    if [ -s "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
        # the jobs first, while slurmd can still end their processes
        scancel --full --quiet --user=root 2>/dev/null || true
        scancel --quiet --state=PENDING --user=root 2>/dev/null || true
        for _ in $(seq 60); do
            [ -z "$(squeue --noheader --states=all --format=%i 2>/dev/null \
                     | head -c 1)" ] && break
            [ -z "$(squeue --noheader --format=%i 2>/dev/null | head -c 1)" ] && break
            sleep 0.5
        done
    fi
    stop_pid_file "$DIR/slurmd.pid" slurmd
    stop_pid_file "$DIR/slurmctld.pid" slurmctld
    stop_pid_file "$DIR/munge/munged.pid" munged
    rm -rf "$DIR"
}

logs() {
    local f
    for f in "$DIR/slurmctld.log" "$DIR/slurmd.log" "$DIR/munge/munged.log"; do
        [ -e "$f" ] && { echo "== $f"; tail -n 20 "$f"; }
    done
    return 0
}

case "$CMD" in
    start) start ;;
    stop) stop ;;
    env) echo "export SLURM_CONF=$DIR/slurm.conf" ;;
    logs) logs ;;
    *) echo "usage: $0 start|stop|env|logs [DIR]" >&2; exit 2 ;;
esac
