#!/usr/bin/env bash
# EPyMARL's protocol, reproduced: run (or resume) the reference sweeps and rebuild their report.
#
#   bash scripts/epymarl-reference.sh                 # all three tasks, then the report
#   bash scripts/epymarl-reference.sh climbing        # one task
#   bash scripts/epymarl-reference.sh --report-only   # only rebuild docs/results/epymarl/ from results/
#
# Each task is `python launch.py -m preset=epymarl env=<task> mixer=qmix,vdn,none seed=0-4 num_envs=N` into
# results/epymarl/<task>/ (2.05M env steps per run, 15 runs per task; hours on two cores).
# Relaunching resumes what is unfinished: a run with a checkpoint continues from it, a finished run
# (committed config.yaml and metrics.jsonl, no checkpoint) is left alone. Only each run's
# config.yaml, metrics.jsonl and .hydra/overrides.yaml are data (results/.gitignore); the report,
# regenerated from them, goes to docs/results/epymarl/<task>/. MARL_SWEEP_ARGS adds overrides
# (default: logger.wandb.mode=offline), e.g. MARL_SWEEP_ARGS="hydra.launcher.n_jobs=1".
set -euo pipefail
cd "$(dirname "$0")/.."

tasks=(lbf mpe climbing)
report_only=0
if [[ "${1:-}" == "--report-only" ]]; then
  report_only=1
  shift
fi
if [[ $# -gt 0 ]]; then
  tasks=("$@")
fi

for task in "${tasks[@]}"; do
  case "$task" in
    lbf|mpe|climbing) ;;
    *) echo "unknown task '$task': choose lbf, mpe or climbing" >&2; exit 2 ;;
  esac
  if [[ $report_only == 0 ]]; then
    # LBF and MPE with 8 envs per run (same update ratio; QMIX, 5 seeds, 300k: learned the same as one env, 1.6-1.8x
    # faster: scripts/epymarl-num-envs.sh, docs/results.md); climbing as its runs began, with one.
    envs=1
    [[ "$task" != climbing ]] && envs=8
    python launch.py -m preset=epymarl "env=$task" mixer=qmix,vdn,none seed=0-4 "num_envs=$envs" \
      "hydra.sweep.dir=results/epymarl/$task" ${MARL_SWEEP_ARGS:-logger.wandb.mode=offline}
  fi
  python -m marl.report "results/epymarl/$task" --out "docs/results/epymarl/$task"
done
