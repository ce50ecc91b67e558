#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the tests and for trying the --slurm commands:
# munged, slurmctld and slurmd as root, without systemd, the node on 127.0.0.1.
#
#   bash tasks/slurm_cluster.sh start     # idempotent: starts what is not running, waits until up
#   bash tasks/slurm_cluster.sh status    # one line: up, or why not
#   bash tasks/slurm_cluster.sh stop      # stops the daemons this script started
#
# Needs root and Debian's slurm-wlm and munge (apt-get install -y slurm-wlm munge). It writes
# /etc/slurm/slurm.conf only when there is none or when this script wrote it (the marker line
# below), and never while slurmctld runs: a real cluster's config is never touched, and then `start`
# only checks that the cluster is up (scontrol ping, and the node idle, mix or alloc).
# State lives under /var/spool/slurm-textrec, logs under /var/log/slurm-textrec.
set -uo pipefail

CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}
MARK="# written by text-recognizer tasks/slurm_cluster.sh"
STATE=/var/spool/slurm-textrec
LOGS=/var/log/slurm-textrec
WAIT_S=${SLURM_CLUSTER_WAIT:-60}

fail() { echo "slurm_cluster: $*" >&2; exit 1; }

# Up: slurmctld answers and the node takes jobs (idle, mix or alloc: busy is up). No srun probe:
# it needs a free CPU, so a busy node would look down.
answers() {
    timeout 15 scontrol ping 2>/dev/null | grep -q "UP" || return 1
    # Our one-node cluster: its slurmd must be running here (slurmctld shows a node whose slurmd
    # died as idle until SlurmdTimeout passes, and its jobs would pend).
    if ours; then pgrep -x slurmd >/dev/null || return 1; fi
    case "$(timeout 15 sinfo -h -o %t 2>/dev/null | head -n 1)" in
        idle|mix|alloc|comp) return 0 ;;
        *) return 1 ;;
    esac
}

ours() { [ -f "$CONF" ] && head -n 1 "$CONF" | grep -qxF "$MARK"; }

write_conf() {
    local host node mem_kb mem_mb cpus mem_per_cpu
    host=$(hostname -s)
    node=$(slurmd -C 2>/dev/null | head -n 1) || true
    [ -n "$node" ] || fail "slurmd -C printed nothing; cannot read this node's CPUs"
    mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    mem_mb=$(( mem_kb / 1024 * 95 / 100 ))  # a little less than all: the OS keeps some
    # slurmd -C says NodeName=<host> CPUs=.. Boards=.. ... RealMemory=..; keep the CPU layout.
    node=$(echo "$node" | sed -E "s/NodeName=[^ ]+/NodeName=$host/; s/RealMemory=[0-9]+//")
    cpus=$(echo "$node" | sed -nE 's/.*CPUs=([0-9]+).*/\1/p')
    # Without a default, a job that names no --mem gets the whole node's memory, and runs one at
    # a time whatever their CPUs: give each CPU its share.
    mem_per_cpu=$(( mem_mb / ${cpus:-1} ))
    mkdir -p "$(dirname "$CONF")"
    cat > "$CONF.tmp" <<EOF
$MARK
# A one-node test cluster; remove this file (and run 'stop') to give the machine back.
ClusterName=textrec
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
# A requeued job waits cred_expire seconds before it may start again (Slurm default 120).
AuthInfo=cred_expire=20
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# Requeue: 'scontrol requeue' and preemption put a batch job back in the queue (same job id).
JobRequeue=1
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
# Scheduling passes every 2 s (default 60 s main, 30 s backfill), so a queued task starts as soon as
# a slot frees up rather than on the next pass.
SchedulerParameters=preempt_send_user_signal,sched_interval=2,bf_interval=2
# Ended jobs stay visible to squeue/scontrol for 5 minutes.
MinJobAge=300
KillWait=30
InactiveLimit=0
$node RealMemory=$mem_mb NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=$mem_per_cpu
EOF
    mv "$CONF.tmp" "$CONF"
}

start_munge() {
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
    command -v munged >/dev/null || fail "munged not found (apt-get install -y munge)"
    local key=/etc/munge/munge.key
    if [ ! -s "$key" ]; then
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then mungekey --create --keyfile="$key" --force >/dev/null
        else dd if=/dev/urandom of="$key" bs=1 count=1024 status=none; fi
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    if id munge >/dev/null 2>&1; then
        chown munge:munge /etc/munge "$key" /run/munge /var/lib/munge /var/log/munge
        chmod 0700 /etc/munge; chmod 0400 "$key"; chmod 0755 /run/munge
        runuser -u munge -- munged >/dev/null 2>&1 || fail "munged did not start (see /var/log/munge/munged.log)"
    else
        chmod 0400 "$key"
        munged --force >/dev/null 2>&1 || fail "munged did not start (see /var/log/munge/munged.log)"
    fi
    for _ in $(seq 1 20); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.25
    done
    fail "munged started but does not answer (see /var/log/munge/munged.log)"
}

start() {
    answers && { echo "slurm cluster up: $(sinfo -h -o '%P %D node(s) %c CPUs %t' 2>/dev/null | head -n 1)"; return 0; }
    for b in slurmctld slurmd srun sinfo munge; do
        command -v "$b" >/dev/null || fail "$b not found (apt-get install -y slurm-wlm munge)"
    done
    [ "$(id -u)" = 0 ] || fail "must run as root to start slurmctld and slurmd (the cluster is not up now)"
    if [ -f "$CONF" ] && ! ours; then
        fail "$CONF exists and was not written by this script (a real cluster's?); not touching it, and the cluster is not up"
    fi
    # The running daemons read this file: it is written only while slurmctld is not running.
    if [ -f "$CONF" ] && pgrep -x slurmctld >/dev/null; then :; else write_conf; fi
    mkdir -p "$STATE/ctld" "$STATE/d" "$LOGS"
    start_munge
    pgrep -x slurmctld >/dev/null || slurmctld -f "$CONF" || fail "slurmctld did not start (see $LOGS/slurmctld.log)"
    pgrep -x slurmd >/dev/null || slurmd -f "$CONF" || fail "slurmd did not start (see $LOGS/slurmd.log)"
    local deadline=$(( SECONDS + WAIT_S ))
    while [ $SECONDS -lt $deadline ]; do
        # A node left DOWN by an earlier unclean stop comes back here.
        case "$(sinfo -h -N -o %t 2>/dev/null | head -n 1)" in
            down*|drain*|fail*) scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 ;;
        esac
        if answers; then
            echo "slurm cluster up: $(sinfo -h -o '%P %D node(s) %c CPUs %m MB %t' | head -n 1)"
            return 0
        fi
        sleep 1
    done
    fail "not up after ${WAIT_S}s (see $LOGS/slurmctld.log and $LOGS/slurmd.log)"
}

stop() {
    ours || fail "$CONF was not written by this script; not stopping a real cluster's daemons"
    local pid
    for f in "$STATE/slurmd.pid" "$STATE/slurmctld.pid"; do
        pid=$(cat "$f" 2>/dev/null) || continue
        [ -n "$pid" ] && kill "$pid" 2>/dev/null
    done
    for _ in $(seq 1 20); do
        pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || break
        sleep 0.5
    done
    echo "slurm cluster stopped (munged left running)"
}

status() {
    if answers; then
        echo "slurm cluster up: $(sinfo -h -o '%P %D node(s) %c CPUs %m MB %t' | head -n 1)"
    else
        echo "slurm cluster down: scontrol ping or the node's state ($(sinfo -h -o %t 2>/dev/null | head -n 1)) says so"
        return 1
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: bash tasks/slurm_cluster.sh start|stop|status" >&2; exit 2 ;;
esac
