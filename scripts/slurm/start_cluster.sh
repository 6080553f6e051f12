#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine (for CI and for trying
# `snakemake --profile profiles/slurm` without a real cluster).
#
#   sudo scripts/slurm/start_cluster.sh        # install, configure, start, wait for idle
#   sudo scripts/slurm/stop_cluster.sh         # stop the daemons again
#
# What it does (idempotent: safe to run again; steps already done are skipped):
#   1. installs the Debian packages slurm-wlm and munge when slurmctld/slurmd/sinfo/munged
#      are missing (apt-get update + apt-get install, non-interactive, quiet);
#   2. writes a MUNGE key /etc/munge/munge.key (owner munge, mode 400) when absent;
#   3. writes /etc/slurm/slurm.conf for one node called "localhost" with this machine's
#      CPUs and memory (from `slurmd -C`), one default partition "main", no accounting
#      (AccountingStorageType=accounting_storage/none: use `squeue`, not `sacct`),
#      proctrack/linuxproc + task/none (no cgroups needed) and select/cons_tres with
#      CR_Core_Memory; if the file changes while daemons run, they are restarted;
#   4. starts munged (as user munge), slurmctld and slurmd directly (there is no systemd)
#      unless they are already running (checked through their pid files);
#   5. waits until `sinfo` reports the node idle (resuming it when it is down/drained),
#      and fails after SLURM_START_TIMEOUT seconds (default 60) printing the daemon logs.
#
# Needs root and Debian/Ubuntu (apt). Environment knobs:
#   SLURM_START_TIMEOUT  seconds to wait for the node to become idle (default 60)
#   SLURM_MEM_RESERVE_MB memory (MB) kept back from the node's RealMemory (default 512)
# Logs: /var/log/slurm/slurmctld.log, /var/log/slurm/slurmd.log, /var/log/munge/munged.log
set -euo pipefail

TIMEOUT=${SLURM_START_TIMEOUT:-60}
MEM_RESERVE_MB=${SLURM_MEM_RESERVE_MB:-512}
NODE=localhost
PARTITION=main
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
RUN_DIR=/run/slurm
LOG_DIR=/var/log/slurm
STATE_DIR=/var/lib/slurm

log() { printf '[start_cluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts daemons)"

# pid_alive PIDFILE: true when the pid file names a live process.
pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

dump_logs() {
    for f in /var/log/munge/munged.log "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log"; do
        if [ -f "$f" ]; then
            printf '\n===== last lines of %s =====\n' "$f" >&2
            tail -n 40 "$f" >&2
        fi
    done
    printf '\n===== sinfo =====\n' >&2
    sinfo -N -l 2>&1 >&2 || true
}

# --- 1. packages ---------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sinfo >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || die "slurm is not installed and apt-get is missing"
    log "installing slurm-wlm and munge (apt-get) ..."
    t0=$(date +%s)
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    log "packages installed in $(( $(date +%s) - t0 ))s"
fi

# --- 2. munge ------------------------------------------------------------------------
id munge >/dev/null 2>&1 || die "user munge is missing (the munge package creates it)"
install -d -o munge -g munge -m 0700 /etc/munge
install -d -o munge -g munge -m 0711 /var/lib/munge
install -d -o munge -g munge -m 0700 /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "writing /etc/munge/munge.key"
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
    else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key

if pid_alive /run/munge/munged.pid; then
    log "munged already running"
else
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged --force
fi
for _ in $(seq 1 20); do
    munge -n </dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.5
done
munge -n </dev/null | unmunge >/dev/null 2>&1 || { dump_logs; die "munge does not work"; }

# --- 3. slurm.conf -------------------------------------------------------------------
SLURM_USER=slurm
id "$SLURM_USER" >/dev/null 2>&1 || SLURM_USER=root
install -d -m 0755 "$CONF_DIR" "$RUN_DIR"
install -d -o "$SLURM_USER" -m 0755 "$LOG_DIR" "$STATE_DIR" "$STATE_DIR/slurmctld"
install -d -m 0755 "$STATE_DIR/slurmd"

# CPUs and memory as slurmd itself sees them (what it will report to slurmctld). Only
# CPUs= is given (no sockets/cores/threads), so each CPU is one schedulable core.
HW=$(slurmd -C 2>/dev/null | head -n1 || true)
CPUS=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$HW")
MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$HW")
[ -n "$CPUS" ] || CPUS=$(nproc)
[ -n "$MEM" ] || MEM=$(free -m | awk '/^Mem:/ {print $2}')
MEM=$(( MEM > 2 * MEM_RESERVE_MB ? MEM - MEM_RESERVE_MB : MEM ))

NEW_CONF=$(cat <<EOF
# Written by scripts/slurm/start_cluster.sh: a single-node SLURM cluster.
ClusterName=cellbridge
SlurmctldHost=localhost
SlurmUser=$SLURM_USER
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# Finished jobs stay visible to squeue for MinJobAge seconds; with no accounting that is
# how the Snakemake executor learns that a job ended (slurm-status-command: squeue).
MinJobAge=300
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)

RESTART=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$NEW_CONF" ]; then
    log "writing $CONF (node $NODE: CPUs=$CPUS RealMemory=${MEM}MB)"
    printf '%s\n' "$NEW_CONF" >"$CONF"
    chmod 0644 "$CONF"
    RESTART=1
fi

if [ "$RESTART" = 1 ] && { pid_alive "$RUN_DIR/slurmctld.pid" || pid_alive "$RUN_DIR/slurmd.pid"; }; then
    log "slurm.conf changed: restarting slurmctld and slurmd"
    SLURM_KEEP_MUNGE=1 "$(dirname "$0")/stop_cluster.sh"
fi

# --- 4. daemons ----------------------------------------------------------------------
if pid_alive "$RUN_DIR/slurmctld.pid"; then
    log "slurmctld already running"
else
    log "starting slurmctld"
    slurmctld -f "$CONF" || { dump_logs; die "slurmctld did not start"; }
fi
if pid_alive "$RUN_DIR/slurmd.pid"; then
    log "slurmd already running"
else
    log "starting slurmd"
    slurmd -f "$CONF" -N "$NODE" || { dump_logs; die "slurmd did not start"; }
fi

# --- 5. wait for the node ------------------------------------------------------------
deadline=$(( $(date +%s) + TIMEOUT ))
state=""
while :; do
    state=$(sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1 || true)
    case "$state" in
        idle|mixed|allocated|completing) break ;;
        down*|drain*|drained*|fail*)
            log "node $NODE is '$state': resuming it"
            scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
    esac
    if [ "$(date +%s)" -ge "$deadline" ]; then
        dump_logs
        die "node $NODE not idle after ${TIMEOUT}s (state: '${state:-no answer from slurmctld}')"
    fi
    sleep 1
done
log "SLURM is up: node $NODE is $state (partition $PARTITION, CPUs=$CPUS, RealMemory=${MEM}MB)"
sinfo
