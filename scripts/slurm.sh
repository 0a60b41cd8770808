#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, on 127.0.0.1 only: make slurm-up / slurm-down.
#
#   scripts/slurm.sh up      install Debian's slurm-wlm and munge if missing (apt-get, as root),
#                            write /etc/slurm/slurm.conf, start munged, slurmctld and slurmd
#   scripts/slurm.sh down    stop the daemons this script started, by the PIDs in their pid files,
#                            and remove the config it wrote
#   scripts/slurm.sh status  sinfo
#
# Everything but the config file lives in $SLURM_STATE (default /var/tmp/tvs-slurm). The
# config must be /etc/slurm/slurm.conf: job steps (srun inside a job) read it from there.
set -euo pipefail

STATE=${SLURM_STATE:-/var/tmp/tvs-slurm}
CONF=/etc/slurm/slurm.conf
PARTITION=${SLURM_PARTITION:-tvs}
NODE=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 3 / 4 ))

die() { echo "slurm.sh: $*" >&2; exit 1; }

install_packages() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return
    [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are missing and installing them needs root"
    command -v apt-get >/dev/null || die "slurm-wlm and munge are missing and there is no apt-get"
    echo "slurm.sh: installing slurm-wlm and munge (apt-get)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
    alive "$STATE/munged.pid" && return
    install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
    install -d -o munge -g munge -m 0755 /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    # munged runs as the munge user: its pid file lives in a directory that user owns.
    runuser -u munge -- munged --force --pid-file=/run/munge/tvs-munged.pid
    for _ in $(seq 50); do [ -s /run/munge/tvs-munged.pid ] && break; sleep 0.1; done
    cp /run/munge/tvs-munged.pid "$STATE/munged.pid"
}

write_conf() {
    install -d -m 0755 /etc/slurm "$STATE" "$STATE/ctld" "$STATE/d" "$STATE/log"
    cat > "$CONF" <<EOF
# Written by scripts/slurm.sh: one node, loopback only.
ClusterName=tvs
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
SchedulerType=sched/backfill
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

up() {
    install_packages
    install -d -m 0755 "$STATE"
    start_munge
    write_conf
    alive "$STATE/slurmctld.pid" || slurmctld
    alive "$STATE/slurmd.pid" || slurmd
    for _ in $(seq 100); do
        state=$(sinfo -h -N -o %T 2>/dev/null | head -1 || true)
        case "$state" in idle|mixed|allocated) echo "slurm.sh: node $NODE $state, partition $PARTITION"; return ;; esac
        sleep 0.2
    done
    die "the node did not become idle; see $STATE/log"
}

stop_pidfile() {
    local file=$1
    alive "$file" || { rm -f "$file"; return; }
    local pid
    pid=$(cat "$file")
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$file"
}

down() {
    stop_pidfile "$STATE/slurmd.pid"
    stop_pidfile "$STATE/slurmctld.pid"
    stop_pidfile "$STATE/munged.pid"
    # With a config naming a controller that is down, every scontrol call waits ~9 s for it, and
    # snakemake-executor-plugin-slurm calls it when Snakemake loads its plugins: every snakemake
    # start. Without a config scontrol fails at once. Only the config this script wrote goes.
    if [ -f "$CONF" ] && head -1 "$CONF" | grep -q '^# Written by scripts/slurm.sh'; then rm -f "$CONF"; fi
    echo "slurm.sh: stopped"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) sinfo ;;
    *) die "usage: $0 up|down|status" ;;
esac
