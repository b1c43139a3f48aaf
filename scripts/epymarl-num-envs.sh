#!/usr/bin/env bash
# Does several envs per process learn the same as one, under EPyMARL's protocol? QMIX on LBF and MPE,
# 5 seeds, 300k env steps, num_envs=1 against num_envs=8 (one update per collected episode in both,
# so the update ratio is the same), then one report of the 20 runs.
#
#   bash scripts/epymarl-num-envs.sh                # run (or resume) the sweep, then the report
#   bash scripts/epymarl-num-envs.sh --report-only  # only rebuild docs/results/epymarl/num_envs/
#
# Runs go to results/epymarl/num_envs/ (each finished run's small files are data, results/.gitignore);
# the report to docs/results/epymarl/num_envs/. The reference sweeps use num_envs=8 only if the final
# and average returns' intervals overlap here (docs/results.md says which was used). The runs committed
# under results/epymarl_bootstrap/num_envs/ were made by this script at commit 4444cc0, before
# preset=epymarl made time-limit ends terminal and LBF's actions unmasked.
# MARL_SWEEP_ARGS adds overrides (default: logger.wandb.mode=offline).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" != "--report-only" ]]; then
  python launch.py -m preset=epymarl env=lbf,mpe mixer=qmix num_envs=1,8 seed=0-4 t_max=300000 \
    hydra.sweep.dir=results/epymarl/num_envs ${MARL_SWEEP_ARGS:-logger.wandb.mode=offline}
fi
python -m marl.report results/epymarl/num_envs --out docs/results/epymarl/num_envs
