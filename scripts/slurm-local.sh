#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for trying deploy/slurm/epochal.sbatch
# without a real cluster. Needs root and Debian 12's `slurm-wlm` and `munge` packages
# (apt-get install -y slurm-wlm munge; not part of scripts/bootstrap.sh on purpose).
#
#   bash scripts/slurm-local.sh start    munged, slurmctld and slurmd on localhost
#   bash scripts/slurm-local.sh env      print the export line that points clients at it
#   bash scripts/slurm-local.sh stop     stop the three daemons this script started
#
# Everything lives under $SLURM_LOCAL_DIR (default /tmp/epochal-slurm): slurm.conf, state,
# logs and pid files. /etc/slurm is not touched; clients find the config through SLURM_CONF.
# The node is this host (its short name), with all its CPUs and 90% of its memory, in one
# partition `debug`. Processes are tracked with proctrack/linuxproc and tasks are not
# confined (task/none), so no cgroup setup is needed.
set -euo pipefail

dir="${SLURM_LOCAL_DIR:-/tmp/epochal-slurm}"
conf="$dir/slurm.conf"
node="$(hostname -s)"
mode="${1:-}"

die() {
  echo "slurm-local: $*" >&2
  exit 1
}

start() {
  [ "$(id -u)" -eq 0 ] || die "run as root (the daemons switch users and own /run/munge)"
  for cmd in munged slurmctld slurmd; do
    command -v "$cmd" >/dev/null || die "no $cmd: apt-get install -y slurm-wlm munge"
  done
  mkdir -p "$dir"/{state,spool,log}

  # munge: the key exists once the package is installed; make one if it does not.
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
  install -d -o munge -g munge -m 755 /run/munge
  install -d -o munge -g munge -m 700 /var/log/munge /var/lib/munge
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
    touch "$dir/munged.started"
    for _ in $(seq 1 20); do
      munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
      sleep 0.25
    done
    munge -n | unmunge >/dev/null || die "munged does not answer"
  fi

  local cpus mem_mb
  cpus="$(nproc)"
  mem_mb="$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)"
  cat >"$conf" <<EOF
# Written by scripts/slurm-local.sh: one node, this host.
ClusterName=epochal-local
SlurmctldHost=$node
SlurmUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
KillWait=30
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MailProg=/bin/true
NodeName=$node NodeHostname=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  # slurmd and the client commands resolve the node name; make sure it resolves locally.
  if ! grep -qE "^[0-9.]+[[:space:]].*\\b$node\\b" /etc/hosts; then
    [ -z "$(tail -c 1 /etc/hosts)" ] || echo >>/etc/hosts
    echo "127.0.0.1 $node" >>/etc/hosts
  fi

  export SLURM_CONF="$conf"
  slurmctld -f "$conf"
  slurmd -f "$conf"
  for _ in $(seq 1 40); do
    sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)' && break
    sleep 0.5
  done
  sinfo || true
  sinfo -h -o %t | grep -qE '^(idle|mix|alloc)' ||
    die "the node did not come up; see $dir/log/slurmctld.log and $dir/log/slurmd.log"
  echo "slurm-local: up. Clients need: export SLURM_CONF=$conf"
}

stop() {
  local name pid
  for name in slurmd slurmctld; do
    if [ -f "$dir/$name.pid" ]; then
      pid="$(cat "$dir/$name.pid")"
      kill "$pid" 2>/dev/null || true
      # Wait for the exit (slurmctld saves its state on the way out), at most 30 s.
      for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      rm -f "$dir/$name.pid"
    fi
  done
  # munged only if this script started it (a system munge service is left alone).
  if [ -f "$dir/munged.started" ] && [ -f /run/munge/munged.pid ]; then
    kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
    rm -f "$dir/munged.started"
  fi
  echo "slurm-local: stopped"
}

case "$mode" in
  start) start ;;
  stop) stop ;;
  env) echo "export SLURM_CONF=$conf" ;;
  *)
    echo "usage: bash scripts/slurm-local.sh start|env|stop" >&2
    exit 2
    ;;
esac
