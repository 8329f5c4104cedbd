#!/usr/bin/env bash
# Start, check or stop a private single-node SLURM (slurmctld + slurmd + munged) for tests and demos.
#
#   scripts/slurm_local.sh start DIR    # writes DIR/slurm.conf, starts the daemons, waits for 'idle'
#   eval "$(scripts/slurm_local.sh env DIR)"   # export SLURM_CONF (and LOGNAME) for sbatch/squeue
#   scripts/slurm_local.sh status DIR
#   scripts/slurm_local.sh stop DIR     # stops the daemons by their pid files
#
# Needs root (slurmd launches jobs as their owner) and the Debian/Ubuntu packages slurm-wlm and munge
# (apt-get install -y --no-install-recommends slurm-wlm munge). Everything lives in DIR: config, munge
# key and socket, state, spool, logs and pid files, so nothing under /etc or /var is touched and the
# cluster can be thrown away with the directory. Every directory on the path to DIR must be
# traversable by all (munged insists), so use e.g. DIR=$(mktemp -d /tmp/slurm-XXXX); chmod 755 it.
# The node is called 'localhost' (NodeAddr 127.0.0.1) with the CPUs and memory slurmd detects; the
# ports are picked free unless SLURM_LOCAL_CTLD_PORT / SLURM_LOCAL_SLURMD_PORT are set.
set -euo pipefail

usage() { echo "usage: $0 {start|stop|status|env} DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
ACTION=$1
DIR=$(mkdir -p "$2" && cd "$2" && pwd)
CONF=$DIR/slurm.conf
MUNGE_SOCKET=$DIR/munge/munge.socket

free_port() {
  "${PYTHON:-python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

stop_pidfile() {  # stop the daemon named in a pid file, wait up to 10 s for it to go
  local pidfile=$1 pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

case "$ACTION" in
start)
  for tool in munged slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null 2>&1 || {
      echo "$tool not found: apt-get install -y --no-install-recommends slurm-wlm munge" >&2; exit 3; }
  done
  [ "$(id -u)" = 0 ] || { echo "a local SLURM needs root (slurmd runs jobs as their owner)" >&2; exit 3; }
  chmod 755 "$DIR"
  mkdir -p "$DIR/munge" "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/run"
  chmod 755 "$DIR/munge"
  if [ ! -s "$DIR/munge/munge.key" ]; then
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=128 count=1 2>/dev/null
    chmod 0400 "$DIR/munge/munge.key"
  fi
  # Detected hardware: CPUs and RealMemory (slurmd drains a node that claims more than it has).
  HW=$(slurmd -C | head -n 1)
  CPUS=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$HW")
  MEM=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$HW")
  CTLD_PORT=${SLURM_LOCAL_CTLD_PORT:-$(free_port)}
  SLURMD_PORT=${SLURM_LOCAL_SLURMD_PORT:-$(free_port)}
  cat >"$CONF" <<EOF
# Private single-node SLURM written by scripts/slurm_local.sh
ClusterName=localtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
MinJobAge=600
MpiDefault=none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=${CPUS:-1} RealMemory=${MEM:-1024} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF=$CONF
  munged --socket="$MUNGE_SOCKET" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"
  slurmctld -i -f "$CONF"
  slurmd -N localhost -f "$CONF"
  for _ in $(seq 150); do
    if sinfo -h -N -o '%T' 2>/dev/null | grep -qx 'idle'; then
      echo "SLURM is up: export SLURM_CONF=$CONF"
      exit 0
    fi
    sleep 0.2
  done
  echo "SLURM did not become idle within 30 s; see $DIR/log/" >&2
  sinfo -N -l >&2 || true
  tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
  exit 1
  ;;
stop)
  stop_pidfile "$DIR/run/slurmd.pid"
  stop_pidfile "$DIR/run/slurmctld.pid"
  stop_pidfile "$DIR/munge/munged.pid"
  echo "SLURM in $DIR stopped"
  ;;
status)
  SLURM_CONF=$CONF sinfo -N -l
  SLURM_CONF=$CONF squeue
  ;;
env)
  echo "export SLURM_CONF=$CONF"
  echo "export LOGNAME=\${LOGNAME:-\$(id -un)}"
  ;;
*) usage ;;
esac
