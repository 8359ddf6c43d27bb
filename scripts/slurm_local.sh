#!/usr/bin/env bash
# A real single-node Slurm on this machine, for trying and testing the Slurm launcher.
#
#   eval "$(scripts/slurm_local.sh start)"   # prints `export SLURM_CONF=... PATH=...`; sbatch/squeue work
#   scripts/slurm_local.sh status
#   scripts/slurm_local.sh stop              # kills only the daemons this script started (by pid)
#
# Installs Debian's slurm-wlm and munge when missing (needs root and a package mirror). Keys,
# config, state, spool and logs live in $SLURM_LOCAL_DIR (default /tmp/thermolion-slurm).
# This Slurm keeps no accounting database, so `sacct` cannot answer; submitit needs it to notice a
# job that ended without a result (cancelled, killed). A small `sacct` stand-in in $DIR/bin answers
# `sacct -o JobID,State,NodeList --parsable2 -j ID` from `scontrol show job` instead.
set -euo pipefail

DIR="${SLURM_LOCAL_DIR:-/tmp/thermolion-slurm}"
CONF="$DIR/slurm.conf"
HOST="$(hostname -s)"
say() { echo "slurm_local: $*" >&2; }

install_if_missing() {
  if command -v slurmctld >/dev/null && command -v munged >/dev/null && command -v sbatch >/dev/null; then
    return
  fi
  if [ "$(id -u)" != 0 ]; then
    say "slurm-wlm and munge are not installed; run as root or: sudo apt-get install slurm-wlm munge"
    exit 1
  fi
  say "installing slurm-wlm and munge"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  install_if_missing
  if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid"; then
    say "already running in $DIR"
    echo "export SLURM_CONF=$CONF PATH=$DIR/bin:$PATH"
    return
  fi
  stop >/dev/null 2>&1 || true
  mkdir -p "$DIR"/{munge,state,spool,logs}
  chmod 700 "$DIR/munge"
  [ -f "$DIR/munge/munge.key" ] || mungekey --create --keyfile="$DIR/munge/munge.key" >/dev/null 2>&1 \
    || dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
  chmod 600 "$DIR/munge/munge.key"
  munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
    --pid-file="$DIR/munged.pid" --log-file="$DIR/logs/munged.log" --seed-file="$DIR/munge/munge.seed"

  local cpus mem
  cpus="$(nproc)"
  mem="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
  cat >"$CONF" <<EOF
ClusterName=thermolion-local
SlurmctldHost=$HOST
SlurmUser=$(id -un)
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=3             # seconds from SIGTERM to SIGKILL on scancel or timeout (Slurm default 30)
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/logs/slurmctld.log
SlurmdLogFile=$DIR/logs/slurmd.log
SlurmctldPort=${SLURM_LOCAL_CTLD_PORT:-6817}
SlurmdPort=${SLURM_LOCAL_SLURMD_PORT:-6818}
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  mkdir -p "$DIR/bin"
  cat >"$DIR/bin/sacct" <<'EOF'
#!/usr/bin/env bash
# Local stand-in for sacct (no accounting database): JobID|State|NodeList from scontrol.
ids=""
while [ $# -gt 0 ]; do case "$1" in -j) ids="$2"; shift 2 ;; -j*) ids="${1#-j}"; shift ;; *) shift ;; esac; done
echo "JobID|State|NodeList"
for id in ${ids//,/ }; do
  scontrol show job -o "$id" 2>/dev/null | while read -r line; do
    declare -A f=()
    for kv in $line; do f["${kv%%=*}"]="${kv#*=}"; done
    jid="${f[JobId]}"
    if [ -n "${f[ArrayJobId]:-}" ]; then
      task="${f[ArrayTaskId]}"
      case "$task" in *-*|*,*) task="[${task%%%*}]" ;; esac
      jid="${f[ArrayJobId]}_$task"
    fi
    echo "$jid|${f[JobState]}|${f[NodeList]:-None assigned}"
  done
done
EOF
  chmod +x "$DIR/bin/sacct"
  export SLURM_CONF="$CONF" PATH="$DIR/bin:$PATH"
  slurmctld -f "$CONF"
  slurmd -f "$CONF"
  for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      say "running: $(sinfo -h -o '%P %D %c CPUs %T')"
      echo "export SLURM_CONF=$CONF PATH=$PATH"
      return
    fi
    sleep 0.5
  done
  say "Slurm did not come up; see $DIR/logs"
  tail -n 20 "$DIR"/logs/*.log >&2 || true
  exit 1
}

stop() {
  local stopped=0
  for daemon in slurmd slurmctld munged; do
    local pidfile="$DIR/$daemon.pid"
    if alive "$pidfile"; then
      kill "$(cat "$pidfile")" && stopped=$((stopped + 1))
      for _ in $(seq 20); do alive "$pidfile" || break; sleep 0.25; done
    fi
    rm -f "$pidfile"
  done
  say "stopped $stopped daemon(s) started from $DIR"
}

status() {
  if alive "$DIR/slurmctld.pid"; then
    SLURM_CONF="$CONF" sinfo
    SLURM_CONF="$CONF" squeue
  else
    say "not running (no live slurmctld from $DIR)"
    return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
