#!/usr/bin/env bash
# Stop the one-node SLURM cluster that scripts/slurm-up.sh started.
#
# Jobs still queued or running are cancelled first (their processes belong to slurmstepd, which
# outlives slurmd), then each daemon is stopped by the PID that slurm-up.sh recorded in
# $MARL_SLURM_STATE (default /run/marl-slurm): SIGTERM, then SIGKILL after 15 s. Nothing is
# stopped by name. Installed packages, the database and the configuration stay, so the next
# slurm-up.sh is quick.
set -uo pipefail

STATE=${MARL_SLURM_STATE:-/run/marl-slurm}
# Reverse start order: compute daemons first, the database last.
DAEMONS=(slurmd slurmctld slurmdbd mariadbd munged)

[[ $(id -u) -eq 0 ]] || { echo "[slurm-down] ERROR: run as root" >&2; exit 1; }

pid_of() { [[ -s $STATE/$1.pid ]] && cat "$STATE/$1.pid"; }

if [[ -n $(pid_of slurmctld) ]] && kill -0 "$(pid_of slurmctld)" 2>/dev/null; then
  jobs=$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u)
  if [[ -n $jobs ]]; then
    echo "[slurm-down] cancelling jobs: $(echo $jobs)"
    # shellcheck disable=SC2086
    timeout 10 scancel $jobs 2>/dev/null || true
    for _ in $(seq 30); do
      [[ -z $(timeout 5 squeue -h -o %A 2>/dev/null) ]] && break
      sleep 0.5
    done
  fi
fi

for d in "${DAEMONS[@]}"; do
  pid=$(pid_of "$d") || continue
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "[slurm-down] $d (pid $pid) ignored SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null
    fi
    echo "[slurm-down] stopped $d (pid $pid)"
  fi
  rm -f "$STATE/$d.pid"
done
echo "[slurm-down] done"
