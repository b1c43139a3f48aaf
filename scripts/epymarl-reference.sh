#!/usr/bin/env bash
# EPyMARL's protocol, reproduced: run (or resume) the reference sweeps and rebuild their report.
#
#   bash scripts/epymarl-reference.sh                 # all three tasks (MPE, LBF, climbing), then the report
#   bash scripts/epymarl-reference.sh mpe             # one task
#   bash scripts/epymarl-reference.sh --report-only   # only rebuild docs/results/epymarl/ from results/
#   bash scripts/epymarl-reference.sh --bootstrap ... # the second data set (below), same options
#
# Two data sets, each 3 tasks x mixer=qmix,vdn,none x seed=0-4, 2.05M env steps per run:
#   results/epymarl/<task>            preset=epymarl as EPyMARL's code runs it: a time-limit end is
#                                     terminal (no bootstrap) and LBF's actions are all available.
#   results/epymarl_bootstrap/<task>  the same settings, except that time-limit ends are bootstrapped
#                                     from the final observation and LBF's valid-action masks are on
#                                     (learner.time_limit_end=bootstrap env.action_masks=true): what
#                                     preset=epymarl gave before it reproduced those two EPyMARL choices.
#
# Each task is `python launch.py -m preset=epymarl env=<task> mixer=qmix,vdn,none seed=0-4 num_envs=N` into
# the data set's folder (hours on two cores). Relaunching resumes what is unfinished: a run with a
# checkpoint continues from it, a finished run (committed config.yaml and metrics.jsonl, no checkpoint)
# is left alone. Only each run's config.yaml, metrics.jsonl and .hydra/overrides.yaml are data
# (results/.gitignore); the report, regenerated from them, goes to docs/results/<data set>/<task>/.
# MARL_SWEEP_ARGS adds overrides (default: logger.wandb.mode=offline), e.g.
# MARL_SWEEP_ARGS="logger.wandb.mode=offline hydra.launcher.n_jobs=1".
set -euo pipefail
cd "$(dirname "$0")/.."

tasks=(mpe lbf climbing)
report_only=0
data_set=epymarl
while [[ "${1:-}" == --* ]]; do
  case "$1" in
    --report-only) report_only=1 ;;
    --bootstrap) data_set=epymarl_bootstrap ;;
    *) echo "unknown option '$1': choose --report-only or --bootstrap" >&2; exit 2 ;;
  esac
  shift
done
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
    # faster: scripts/epymarl-num-envs.sh, docs/results.md); climbing with one.
    envs=1
    [[ "$task" != climbing ]] && envs=8
    variant=()
    if [[ $data_set == epymarl_bootstrap ]]; then
      variant=(learner.time_limit_end=bootstrap)
      [[ "$task" == lbf ]] && variant+=(env.action_masks=true)
    fi
    python launch.py -m preset=epymarl "env=$task" mixer=qmix,vdn,none seed=0-4 "num_envs=$envs" "${variant[@]}" \
      "hydra.sweep.dir=results/$data_set/$task" ${MARL_SWEEP_ARGS:-logger.wandb.mode=offline}
  fi
  python -m marl.report "results/$data_set/$task" --out "docs/results/$data_set/$task"
done
