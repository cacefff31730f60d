#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the integration tests (CI starts it; so can you).
#   scripts/slurm_cluster.sh install   apt-get slurm-wlm + munge (root)
#   scripts/slurm_cluster.sh start DIR  write DIR/slurm.conf, start munged, slurmctld, slurmd; prints SLURM_CONF=...
#   scripts/slurm_cluster.sh stop DIR   stop the daemons started by `start DIR`
# No systemd is assumed: daemons run in the background and their PIDs are kept in DIR.
set -euo pipefail
cmd=${1:?install|start|stop}
dir=${2:-/tmp/runner-slurm}

case "$cmd" in
install)
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
  fi
  ;;
start)
  mkdir -p "$dir"/{state,spool,log}
  dir=$(cd "$dir" && pwd)
  read -r cpus mem < <(slurmd -C | awk '/NodeName/ {for (i=1;i<=NF;i++) {split($i,a,"="); if (a[1]=="CPUs") c=a[2]; if (a[1]=="RealMemory") m=a[2]}; print c, m}')
  cat >"$dir/slurm.conf" <<CONF
ClusterName=runner
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
DefMemPerCPU=1000
SlurmctldParameters=preempt_send_user_signal
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF="$dir/slurm.conf"
  if ! pgrep -x munged >/dev/null; then
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged >/dev/null 2>&1
  fi
  slurmctld -i >/dev/null 2>&1
  slurmd -N localhost >/dev/null 2>&1
  for _ in $(seq 60); do
    if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
      echo "SLURM_CONF=$SLURM_CONF"
      exit 0
    fi
    sleep 1
  done
  echo "SLURM did not become idle; see $dir/log" >&2
  exit 1
  ;;
stop)
  for p in slurmd slurmctld; do
    [ -f "$dir/$p.pid" ] && kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
  done
  ;;
*)
  echo "usage: $0 install|start DIR|stop DIR" >&2
  exit 2
  ;;
esac
