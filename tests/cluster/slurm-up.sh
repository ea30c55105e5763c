#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the cluster tests (Debian, root).
#
#   tests/cluster/slurm-up.sh up       install what is missing, write the configs, start
#                                      munged, mariadbd, slurmdbd, slurmctld and slurmd,
#                                      create the cluster, account and user; idempotent
#   tests/cluster/slurm-up.sh down     stop the daemons this script started, and only those
#   tests/cluster/slurm-up.sh status   one line per daemon; exit 0 when all run and the node is up
#
# Exit status of `up`: 0 ready, 3 this machine cannot run it (not root, not Debian, no apt,
# a foreign /etc/slurm/slurm.conf), 1 a daemon did not come up (its log is printed).
# The node is the machine itself as `slurmd -C` sees it, with one fake GPU: a GRES whose
# File= is a character device (Slurm 22.05 drops a GPU without one and drains the node),
# of model "fake".
# Settings: LEUKOFLOW_SLURM_STATE (state, logs, PIDs; default /var/tmp/leukoflow-slurm),
# LEUKOFLOW_SLURM_PARTITION (default main), LEUKOFLOW_SLURM_ACCOUNT (default leukoflow).
set -euo pipefail

STATE=${LEUKOFLOW_SLURM_STATE:-/var/tmp/leukoflow-slurm}
PARTITION=${LEUKOFLOW_SLURM_PARTITION:-main}
ACCOUNT=${LEUKOFLOW_SLURM_ACCOUNT:-leukoflow}
# The fake GPU's model, what a job's `gpu_model` resource (--gpus=fake:1) asks for.
GPU_TYPE=fake
CLUSTER=leukoflow
CONF_DIR=/etc/slurm
MARKER="# written by leukoflow tests/cluster/slurm-up.sh"
DB_PORT=33061
DB_PASSWORD=leukoflow-slurmdbd
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

log() { echo "slurm-up: $*" >&2; }
unfit() {
    log "$*"
    exit 3
}

# The PID of a daemon this script started and that still runs, or nothing. The process is
# recognised by the daemon's name among its arguments (it may still be `setsid <daemon>`).
running_pid() {
    local name=$1 pid arg
    [[ -f $STATE/pids/$name ]] || return 0
    pid=$(<"$STATE/pids/$name")
    while IFS= read -r -d '' arg; do
        if [[ ${arg##*/} == "$name" ]]; then
            echo "$pid"
            return 0
        fi
    done 2>/dev/null <"/proc/$pid/cmdline" || true
}

# Start one daemon in the foreground mode, detached, and remember its PID.
start() {
    local name=$1
    shift
    if [[ -n $(running_pid "$name") ]]; then
        return 0
    fi
    setsid "$@" >>"$STATE/log/$name.out" 2>&1 </dev/null &
    echo $! >"$STATE/pids/$name"
    log "started $name (pid $!)"
}

# Whether process $1 runs (a zombie does not).
alive() {
    local stat
    stat=$(cat 2>/dev/null "/proc/$1/stat") || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# Wait until a command succeeds; when the daemon exits or time is up, print its log and fail.
wait_for() {
    local name=$1 seconds=$2
    shift 2
    local deadline=$((SECONDS + seconds)) pid
    pid=$(<"$STATE/pids/$name")
    until "$@" >/dev/null 2>&1; do
        if ! alive "$pid" || ((SECONDS > deadline)); then
            log "$name did not come up; its log:"
            tail -n 30 "$STATE/log/$name"*.log "$STATE/log/$name.out" 2>/dev/null >&2 || true
            exit 1
        fi
        sleep 0.2
    done
}

check_machine() {
    [[ $(id -u) -eq 0 ]] || unfit "needs root (it installs packages and runs the Slurm daemons)"
    [[ -f /etc/debian_version ]] || unfit "needs Debian (it installs Debian's Slurm packages)"
    command -v apt-get >/dev/null || unfit "needs apt-get"
    if [[ -f $CONF_DIR/slurm.conf ]] && ! grep -qF "$MARKER" "$CONF_DIR/slurm.conf"; then
        unfit "$CONF_DIR/slurm.conf exists and is not this script's: not touching a real cluster"
    fi
}

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]}"
    # Keep the packages' maintainer scripts from starting the services themselves:
    # this script starts (and later stops) exactly the daemons it runs.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        own_policy=1
    fi
    local status=0
    {
        apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                "${missing[@]}"
    } >"$STATE/log/apt.log" 2>&1 || status=$?
    if ((own_policy)); then
        rm -f "$policy"
    fi
    if ((status)); then
        tail -n 20 "$STATE/log/apt.log" >&2
        unfit "apt-get install failed (see $STATE/log/apt.log)"
    fi
}

write_configs() {
    local node cpus mem host
    host=$(hostname -s)
    # `slurmd -C` prints the node as Slurm sees it: NodeName=... CPUs=... RealMemory=...
    node=$(slurmd -C | head -n 1)
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node")
    mkdir -p "$CONF_DIR" "$STATE/ctld" "$STATE/slurmd" "$STATE/dev"
    # One fake GPU: a character device with /dev/null's numbers (mknod c 1 3).
    [[ -c $STATE/dev/gpu0 ]] || mknod "$STATE/dev/gpu0" c 1 3
    cat >"$CONF_DIR/slurm.conf.new" <<EOF
$MARKER
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# Without a default, a job that gives no --mem takes the whole node.
DefMemPerCPU=$((mem / cpus / 2))
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu,gres/gpu:$GPU_TYPE
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=10
JobCompType=jobcomp/none
# Quick turnaround for tests: time limits enforced within seconds, short kill wait.
KillWait=5
OverTimeLimit=0
MinJobAge=600
SchedulerParameters=sched_interval=2
$node Gres=gpu:$GPU_TYPE:1 NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$CONF_DIR/gres.conf.new" <<EOF
$MARKER
NodeName=$host Name=gpu Type=$GPU_TYPE File=$STATE/dev/gpu0
EOF
    cat >"$CONF_DIR/slurmdbd.conf.new" <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$CONF_DIR/slurmdbd.conf.new"
    # A changed configuration restarts the Slurm daemons this script runs.
    local f changed=0
    for f in slurm.conf gres.conf slurmdbd.conf; do
        cmp -s "$CONF_DIR/$f.new" "$CONF_DIR/$f" || changed=1
        mv "$CONF_DIR/$f.new" "$CONF_DIR/$f"
    done
    if ((changed)); then
        stop slurmd slurmctld slurmdbd
    fi
}

start_munge() {
    # A munged that already answers (the machine's own) is used as it is.
    if [[ -z $(running_pid munged) ]] && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    start munged setpriv --reuid=munge --regid=munge --init-groups -- munged -F
    wait_for munged 20 bash -c 'munge -n | unmunge'
}

start_mariadb() {
    local datadir=$STATE/mysql sock=$STATE/run/mysqld.sock
    if [[ ! -d $datadir/mysql ]]; then
        mariadb-install-db --no-defaults --datadir="$datadir" --user=root \
            --auth-root-authentication-method=socket --skip-test-db \
            >"$STATE/log/mariadb-install.log" 2>&1
    fi
    start mariadbd mariadbd --no-defaults --datadir="$datadir" --user=root \
        --socket="$sock" --port=$DB_PORT --bind-address=127.0.0.1 --skip-name-resolve \
        --pid-file="$STATE/run/mariadbd.pid" --log-error="$STATE/log/mariadbd.log" \
        --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 --max-connections=50
    wait_for mariadbd 60 mariadb-admin --socket="$sock" ping
    mariadb --socket="$sock" <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
}

create_accounts() {
    sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
    sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"
    sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT" ||
        sacctmgr -i -Q add account "$ACCOUNT" cluster="$CLUSTER" \
            description="leukoflow tests" organization=leukoflow >/dev/null
    sacctmgr -n -P list assoc user=root account="$ACCOUNT" format=user | grep -qx root ||
        sacctmgr -i -Q add user root account="$ACCOUNT" cluster="$CLUSTER" >/dev/null
}

node_ready() {
    local state
    state=$(sinfo -h -N -o '%t' 2>/dev/null | head -n 1)
    [[ $state == idle || $state == mix || $state == alloc ]]
}

up() {
    check_machine
    mkdir -p "$STATE/pids" "$STATE/log" "$STATE/run"
    install_packages
    write_configs
    start_munge
    start_mariadb
    start slurmdbd slurmdbd -D
    wait_for slurmdbd 60 sacctmgr -n list cluster
    create_accounts
    start slurmctld slurmctld -D -i
    wait_for slurmctld 60 scontrol ping
    start slurmd slurmd -D
    wait_for slurmd 60 node_ready
    log "ready: partition $PARTITION, account $ACCOUNT, $(sinfo -h -N -o '%N %c CPUs %m MB %G')"
}

# Stop daemons this script started: TERM together, then KILL what still runs after 10 s.
stop() {
    local name pid pids=()
    for name in "$@"; do
        pid=$(running_pid "$name")
        if [[ -n $pid ]]; then
            kill -TERM "$pid"
            pids+=("$pid")
            log "stopping $name (pid $pid)"
        fi
        rm -f "$STATE/pids/$name"
    done
    local tries alive
    for ((tries = 0; tries < 100; tries++)); do
        alive=0
        for pid in "${pids[@]}"; do
            [[ -d /proc/$pid ]] && alive=1
        done
        ((alive)) || return 0
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if [[ -d /proc/$pid ]]; then
            kill -KILL "$pid"
        fi
    done
}

# The Slurm daemons first, then what they need (the database, munge).
down() {
    stop slurmd slurmctld slurmdbd
    stop mariadbd munged
}

status() {
    local name pid all=0
    for name in "${DAEMONS[@]}"; do
        pid=$(running_pid "$name")
        if [[ -n $pid ]]; then
            echo "$name running (pid $pid)"
        elif [[ $name == munged ]] && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
            echo "munged running (not started by this script)"
        else
            echo "$name stopped"
            all=1
        fi
    done
    if ((all == 0)) && node_ready; then
        sinfo -N -o '%N %P %t %c %m %G'
    else
        all=1
    fi
    return $all
}

case ${1:-} in
up) up ;;
down) down ;;
status) status ;;
*)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
