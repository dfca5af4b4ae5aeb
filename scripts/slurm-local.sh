#!/usr/bin/env bash
# A one-node Slurm cluster on localhost (Debian's slurm-wlm and munge), for the Slurm
# executor's integration test and CI:
#   bash scripts/slurm-local.sh install   # apt-get install slurm-wlm munge (root)
#   bash scripts/slurm-local.sh start     # write the config, start munged, slurmctld, slurmd
#   bash scripts/slurm-local.sh stop
# State lives under $TOFA_SLURM_DIR (default /tmp/tofa-slurm). `start` waits until the node
# takes jobs and prints `SLURM_CONF=<file>`: export it (or use the default /etc/slurm path,
# which `start` also writes when it can) so that sbatch, squeue and scancel find the cluster.
set -euo pipefail

dir="${TOFA_SLURM_DIR:-/tmp/tofa-slurm}"
conf="$dir/slurm.conf"
host="$(hostname -s)"
cpus="$(nproc)"
mem_mb="$(awk '/MemTotal/ { print int($2 / 1024 * 0.8) }' /proc/meminfo)"

install() {
    if command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v munged >/dev/null; then
        return 0
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge
}

start() {
    mkdir -p "$dir"/{state,spool,log,munge}
    # munge: a key of our own and a socket under $dir, so nothing system-wide is needed
    if [ ! -s "$dir/munge/munge.key" ]; then
        dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
        chmod 600 "$dir/munge/munge.key"
    fi
    chmod 700 "$dir/munge"
    cat > "$conf" <<CONF
ClusterName=tofa-local
SlurmctldHost=$host
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
SlurmUser=$(id -un)
SlurmdUser=$(id -un)
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
# schedule a submitted job at once (the default waits up to 3 s to batch submissions)
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
InactiveLimit=0
KillWait=5
MinJobAge=30
SlurmctldTimeout=30
SlurmdTimeout=30
# without a default, a job asks for the whole node's memory and jobs run one at a time
DefMemPerCPU=$((mem_mb / cpus))
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    export SLURM_CONF="$conf"
    if [ -d /etc/slurm ] && [ -w /etc/slurm ]; then
        cp "$conf" /etc/slurm/slurm.conf
    fi
    if ! pgrep -f "munged.*$dir/munge" >/dev/null; then
        munged --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
            --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
            --seed-file="$dir/munge/munge.seed" -f
    fi
    pgrep -f "slurmctld -f $conf" >/dev/null || slurmctld -f "$conf"
    pgrep -f "slurmd -f $conf" >/dev/null || slurmd -f "$conf"
    for _ in $(seq 60); do
        if sinfo -h -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; then
            echo "SLURM_CONF=$conf"
            return 0
        fi
        scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
        sleep 1
    done
    echo "slurm-local: the node did not come up; logs in $dir/log" >&2
    sinfo >&2 || true
    tail -n 20 "$dir"/log/*.log >&2 || true
    return 1
}

stop() {
    for p in slurmd slurmctld; do
        [ -f "$dir/$p.pid" ] && kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
    done
    [ -f "$dir/munge/munged.pid" ] && kill "$(cat "$dir/munge/munged.pid")" 2>/dev/null || true
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
