#!/usr/bin/env bash
# Issue 25, "same protocol, curves": EPyMARL's own QMIX, unchanged, on MPE simple_spread and LBF
# Foraging-8x8-2p-2f-coop-v3, seeds 0 and 1, to 300k env steps, then one table beside marl's
# preset=epymarl runs (greedy return, Q_tot, grad norm at 50k..300k).
#
#   scripts/epymarl-side-by-side.sh EPYMARL_CHECKOUT EPYMARL_VENV [MARL_RESULTS]
#   scripts/epymarl-side-by-side.sh /work/epymarl /work/epymarl-venv results/epymarl
#
# EPYMARL_CHECKOUT: uoe-agents/epymarl at cbc38c0 (e.g. `git archive cbc38c0 | tar -x -C DIR`).
# EPYMARL_VENV: its own venv (torch 2.13.0 CPU, 'pettingzoo[mpe]==1.24.3', lbforaging==2.0.0,
#   gymnasium==1.3.0, sacred, pyyaml, 'setuptools<81' for sacred's pkg_resources, and smaclite
#   installed --no-deps with scikit-learn and rtree, which EPyMARL imports unconditionally).
# MARL_RESULTS: the folder holding marl's mpe/ and lbf/ sweeps (default results/epymarl).
#
# The runs are the README's commands (EPyMARL's shipped qmix.yaml + gymma.yaml) with one change:
# t_max=301000 instead of 300000. EPyMARL tests when t_env - last_test_T >= test_interval, and on
# LBF (episodes of varying length) the test after 250k drifts past 300000 a little, so a run
# stopped at 300000 may never test there; t_max only ends the loop, nothing else reads it.
# Runs go one at a time (this machine has 2 cores); a (task, seed) that already has a COMPLETED
# run in EPyMARL's results/sacred is skipped, so the script resumes.
set -euo pipefail
EPYMARL=${1:?usage: $0 EPYMARL_CHECKOUT EPYMARL_VENV [MARL_RESULTS]}
VENV=${2:?usage: $0 EPYMARL_CHECKOUT EPYMARL_VENV [MARL_RESULTS]}
MARL=${3:-results/epymarl}
HERE=$(cd "$(dirname "$0")" && pwd)
[[ -f "$EPYMARL/src/main.py" ]] || { echo "no EPyMARL checkout at $EPYMARL ($EPYMARL/src/main.py missing)" >&2; exit 2; }
[[ -x "$VENV/bin/python" ]] || { echo "no venv at $VENV ($VENV/bin/python missing)" >&2; exit 2; }

# done KEY SEED: is there a COMPLETED run of this task and seed with t_max >= 300000?
done_run() {
  python3 - "$EPYMARL" "$1" "$2" <<'PY'
import json, sys
from pathlib import Path
root, key, seed = Path(sys.argv[1]) / "results/sacred/qmix", sys.argv[2], int(sys.argv[3])
for c in root.glob("*/*/config.json"):
    cfg = json.loads(c.read_text())
    try:
        status = json.loads((c.parent / "run.json").read_text()).get("status")
    except (OSError, json.JSONDecodeError):
        continue
    if cfg["env_args"]["key"] == key and cfg["seed"] == seed and cfg["t_max"] >= 300000 and status == "COMPLETED":
        sys.exit(0)
sys.exit(1)
PY
}

run() {  # run TIME_LIMIT KEY SEED
  if done_run "$2" "$3"; then echo "done already: $2 seed $3"; return; fi
  echo "$(date -u +%FT%TZ) EPyMARL qmix $2 seed $3"
  (cd "$EPYMARL" && /usr/bin/time -f "wall %e s" "$VENV/bin/python" src/main.py --config=qmix --env-config=gymma \
     with env_args.time_limit="$1" env_args.key="$2" seed="$3" t_max=301000 \
     > "$EPYMARL/side-by-side-$(echo "$2" | tr ':/' '__')-seed$3.log" 2>&1)
  tail -1 "$EPYMARL/side-by-side-$(echo "$2" | tr ':/' '__')-seed$3.log"
}

for seed in 0 1; do
  run 25 pz-mpe-simple-spread-v3 "$seed"
  run 50 lbforaging:Foraging-8x8-2p-2f-coop-v3 "$seed"
done

python3 "$HERE/epymarl_side_by_side_table.py" --epymarl "$EPYMARL" --marl mpe="$MARL/mpe" --marl lbf="$MARL/lbf"
