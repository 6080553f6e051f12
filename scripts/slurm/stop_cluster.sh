#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by scripts/slurm/start_cluster.sh:
# slurmd, slurmctld and munged, each through its own pid file (nothing else is killed).
# Running jobs are killed with slurmd. Configuration, key and logs are kept, so
# start_cluster.sh brings the same cluster back. SLURM_KEEP_MUNGE=1 leaves munged running.
set -euo pipefail

log() { printf '[stop_cluster] %s\n' "$*" >&2; }
[ "$(id -u)" -eq 0 ] || { log "ERROR: run as root"; exit 1; }

# stop NAME PIDFILE: SIGTERM the pid in PIDFILE, wait up to 20 s, then SIGKILL.
stop() {
    local name=$1 pidfile=$2 pid
    if [ ! -s "$pidfile" ] || ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        log "$name is not running"
        return 0
    fi
    pid=$(cat "$pidfile")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
        sleep 0.5
    done
    log "$name did not stop: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

stop slurmd /run/slurm/slurmd.pid
stop slurmctld /run/slurm/slurmctld.pid
if [ "${SLURM_KEEP_MUNGE:-0}" != 1 ]; then
    stop munged /run/munge/munged.pid
fi
