#!/usr/bin/env bash
# Bring up a one-node SLURM cluster on this Debian 12 machine, for the SLURM tests and for trying
# `launch.py -m hydra/launcher=slurm` locally (docs/slurm.md).
#
# What runs: munged, MariaDB (for slurmdbd), slurmdbd (so that `sacct` works: submitit polls it, and
# without it a killed job is never noticed), slurmctld and slurmd. There is no systemd here, so each
# daemon is started by hand in the foreground mode of the daemon, in the background of this shell,
# and its PID is written to $MARL_SLURM_STATE/<name>.pid; scripts/slurm-down.sh kills those PIDs.
#
# Idempotent: when every recorded daemon is alive and `sinfo` answers, it only prints the cluster.
# Otherwise it stops what it had started before and starts everything afresh (jobs recorded in
# the state save location survive).
#
# Facts this configuration depends on (measured on this machine, issue 4):
#  - no cgroups: ProctrackType=proctrack/linuxproc, TaskPlugin=task/none;
#  - every address is 127.0.0.1;
#  - node hardware comes from `slurmd -C`, with RealMemory a little below MemTotal (a node that
#    reports less memory than configured is drained);
#  - EnforcePartLimits=ALL, so an impossible request is refused at submission instead of pending;
#  - batch_sched_delay=0,bf_interval=1 and cred_expire=10, else a requeued job waits ~150 s.
#
# Usage: sudo scripts/slurm-up.sh        (root; about 45 s the first time, apt included)
# Env:   MARL_SLURM_STATE (default /run/marl-slurm), MARL_SLURM_CLUSTER (default marl),
#        MARL_SLURM_PARTITION (default debug).
set -euo pipefail

STATE=${MARL_SLURM_STATE:-/run/marl-slurm}
CLUSTER=${MARL_SLURM_CLUSTER:-marl}
PARTITION=${MARL_SLURM_PARTITION:-debug}
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
START=$(date +%s)

log() { echo "[slurm-up +$(( $(date +%s) - START ))s] $*"; }
die() { echo "[slurm-up] ERROR: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (it installs packages and starts daemons)"

alive() {  # alive NAME: the recorded PID of NAME is a running process
  local f="$STATE/$1.pid"
  [[ -s $f ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

all_alive() {
  local d
  for d in "${DAEMONS[@]}"; do alive "$d" || return 1; done
}

# wait_for SECONDS WHAT CMD...: poll CMD every 0.5 s until it succeeds.
wait_for() {
  local limit=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) < deadline )) || die "$what did not come up within ${limit}s (logs: /var/log/slurm, /var/log/mysql)"
    sleep 0.5
  done
}

if all_alive && timeout 10 sinfo >/dev/null 2>&1; then
  log "already up"
  sinfo
  exit 0
fi
"$HERE/slurm-down.sh" >/dev/null 2>&1 || true
mkdir -p "$STATE"

# --- 1. packages -------------------------------------------------------------------------------
need_install=0
for bin in munged slurmctld slurmd slurmdbd mariadbd sacct; do
  command -v "$bin" >/dev/null 2>&1 || need_install=1
done
if (( need_install )); then
  log "installing slurm-wlm, slurmdbd, munge, mariadb-server (apt)"
  # Keep the packages' init scripts from starting services: we start them ourselves.
  made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm slurmdbd munge mariadb-server mariadb-client \
    >/dev/null
  (( made_policy )) && rm -f /usr/sbin/policy-rc.d
fi

# --- 2. munge ----------------------------------------------------------------------------------
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key
log "starting munged"
setpriv --reuid=munge --regid=munge --init-groups munged --foreground >/var/log/munge/munged.out 2>&1 &
echo $! > "$STATE/munged.pid"
wait_for 15 munged munge -n

# --- 3. MariaDB for slurmdbd -------------------------------------------------------------------
mkdir -p /run/mysqld /var/log/mysql
chown mysql:mysql /run/mysqld /var/log/mysql
if [[ ! -d /var/lib/mysql/mysql ]]; then
  log "initialising the MariaDB data directory"
  mariadb-install-db --user=mysql --datadir=/var/lib/mysql --auth-root-authentication-method=socket >/dev/null
fi
log "starting mariadbd"
mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
  --pid-file=/run/mysqld/mysqld.pid --bind-address=127.0.0.1 --skip-name-resolve \
  --innodb-use-native-aio=0 --innodb-buffer-pool-size=128M --innodb-log-file-size=64M \
  --innodb-lock-wait-timeout=900 --log-error=/var/log/mysql/error.log >/var/log/mysql/mariadbd.out 2>&1 &
echo $! > "$STATE/mariadbd.pid"
wait_for 60 MariaDB mariadb --socket=/run/mysqld/mysqld.sock -e "SELECT 1"
DBPASS_FILE=/etc/slurm/.dbpass
mkdir -p /etc/slurm
[[ -s $DBPASS_FILE ]] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$DBPASS_FILE")
DBPASS=$(cat "$DBPASS_FILE")
mariadb --socket=/run/mysqld/mysqld.sock <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL

# --- 4. SLURM configuration --------------------------------------------------------------------
HOST=$(hostname -s)
# `slurmd -C` prints "NodeName=... CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2
# ThreadsPerCore=1 RealMemory=24105"; keep the hardware fields, and lower RealMemory a little.
HW=$(slurmd -C | head -n1)
field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$HW"; }
CPUS=$(field CPUs); BOARDS=$(field Boards); SOCKETS=$(field SocketsPerBoard)
CORES=$(field CoresPerSocket); THREADS=$(field ThreadsPerCore); MEM=$(field RealMemory)
[[ -n $CPUS && -n $MEM ]] || die "could not read the node hardware from 'slurmd -C': $HW"
MEM=$(( MEM * 95 / 100 ))

mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
cat > /etc/slurm/slurm.conf <<CONF
# Written by scripts/slurm-up.sh: a one-node cluster on 127.0.0.1 (see that script for why).
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,bf_interval=1,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
EnforcePartLimits=ALL
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobCompType=jobcomp/none
MinJobAge=300
KillWait=10
NodeName=$HOST NodeAddr=127.0.0.1 NodeHostname=$HOST CPUs=$CPUS Boards=$BOARDS SocketsPerBoard=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF

cat > /etc/slurm/slurmdbd.conf <<CONF
# Written by scripts/slurm-up.sh.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$DBPASS
CONF
chmod 0600 /etc/slurm/slurmdbd.conf

# --- 5. SLURM daemons --------------------------------------------------------------------------
log "starting slurmdbd"
slurmdbd -D >/var/log/slurm/slurmdbd.out 2>&1 &
echo $! > "$STATE/slurmdbd.pid"
wait_for 60 slurmdbd sacctmgr -n show cluster
if [[ -z $(sacctmgr -n -P show cluster "$CLUSTER" format=cluster) ]]; then
  sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi

log "starting slurmctld and slurmd"
slurmctld -D >/var/log/slurm/slurmctld.out 2>&1 &
echo $! > "$STATE/slurmctld.pid"
wait_for 30 slurmctld scontrol ping
slurmd -D >/var/log/slurm/slurmd.out 2>&1 &
echo $! > "$STATE/slurmd.pid"

node_ready() { sinfo -h -n "$HOST" -o %T | grep -Eq '^(idle|mixed|allocated)'; }
wait_for 60 "node $HOST (sinfo idle)" node_ready
# A node left drained or down by an earlier run (e.g. a RealMemory change) is put back to work.
scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
wait_for 30 sacct sacct -n -X -S now-1minute

log "SLURM cluster '$CLUSTER' is up ($CPUS CPUs, RealMemory=${MEM}M, partition $PARTITION); PIDs in $STATE"
sinfo
