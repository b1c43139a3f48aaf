"""Compare experiments across seeds:
``python -m marl.report PATH... [--out DIR] [--per-agent] [--marl-eval] [--wandb] [--aggregate [--bounds T=LO:HI]]``.

PATHs are sweep folders, run folders, or any folder above them. Runs are grouped by their config
minus the seed (:func:`marl.wandb_naming.experiment_key`, the same key as their W&B group), and
for each env the report gives the final and the best evaluation return of each group as mean and
interquartile mean (IQM) with 95% stratified-bootstrap confidence intervals over seeds (rliable),
and EPyMARL's maximum return (at the evaluation step where the mean over seeds is highest) and
average return (each run's mean over its evaluations). ``--per-agent`` divides the returns by
the env's number of agents (where the team reward is their sum), as EPyMARL's paper does for MPE.

It writes to ``--out`` (default ``<first PATH>/report``): ``report.md`` (the tables, also printed),
``curves_<env>.png`` (IQM learning curves with shaded CIs), ``summary.csv`` (one row per group),
``runs.csv`` (one row per run) and, with ``--marl-eval``, ``marl_eval.json``. Runs without a final
record (still running, preempted, failed) are listed by name; a group's numbers use its finished
runs, or, when none has finished, its latest evaluations (marked "in progress").

``--aggregate`` adds the comparison of the algorithms across the tasks (:mod:`marl.report.across_tasks`):
per-task normalised final scores, aggregate IQM, mean, median and optimality gap, performance
profiles, probability of improvement and the aggregate IQM over training, in report.md and as
``aggregate*.csv``, ``normalised_runs.csv``, ``improvement.csv`` and PNGs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from typing import TYPE_CHECKING

from marl.report.aggregate import compare
from marl.report.files import write_report
from marl.report.model import METRIC, Comparison, EnvTable

if TYPE_CHECKING:
    from marl.report.across_tasks import AcrossTasks


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m marl.report", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, help="sweep folders, run folders, or folders above them")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <first PATH>/report)")
    p.add_argument("--metric", default=METRIC, help=f"the evaluation metric to compare (default {METRIC})")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples for the tables (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.add_argument("--per-agent", action="store_true",
                   help="divide each run's returns by its env's number of agents where its team reward is the sum "
                        "of the agents' rewards (EPyMARL's paper does so for MPE); 1 where it is already per agent")
    p.add_argument("--marl-eval", action="store_true", help="also write marl-eval compatible marl_eval.json")
    p.add_argument("--wandb", action="store_true", help="also publish the comparison as a W&B Report (online only)")
    add_aggregate_args(p)
    return p.parse_args(argv)


def add_aggregate_args(p: argparse.ArgumentParser) -> None:
    """``--aggregate`` and its options (marl.report.across_tasks; docs/report.md, "Across tasks")."""
    g = p.add_argument_group("across tasks (--aggregate)")
    g.add_argument("--aggregate", action="store_true",
                   help="also compare the algorithms across tasks: per-task normalised final scores, aggregate IQM, "
                        "mean, median and optimality gap with 95%% CIs, performance profiles, probability of "
                        "improvement, and the aggregate IQM over training")
    g.add_argument("--bounds", action="append", default=[], metavar="TASK=LOW:HIGH",
                   help="a task's normalisation bounds (repeatable; a side left empty keeps its default: the random "
                        "policy's return, the best return of any compared run); TASK is the task's table heading")
    g.add_argument("--random-episodes", type=int, default=None,
                   help="episodes of the uniform-random policy that measures a task's lower bound (default 200)")
    g.add_argument("--random-cache", type=Path, default=None,
                   help="the JSON cache of measured random-policy returns (default <out>/random_returns.json)")


def check_aggregate_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the ``--aggregate`` options, as one line, before any run is read (None: nothing)."""
    from marl.report.across_tasks import parse_bounds

    if args.random_episodes is not None and args.random_episodes < 1:
        return f"--random-episodes={args.random_episodes} is invalid: must be >= 1"
    try:
        parse_bounds(args.bounds)
    except ValueError as exc:
        return f"marl.report: {exc}"
    return None


def across_tasks(comp: Comparison, args: argparse.Namespace, out: Path) -> AcrossTasks:
    """The across-task comparison for ``--aggregate``, lower bounds measured (or read from the cache)."""
    from marl.report.across_tasks import compare_across_tasks, parse_bounds, task_bounds
    from marl.report.random_policy import CACHE_NAME, RANDOM_EPISODES, random_return

    episodes = args.random_episodes or RANDOM_EPISODES
    cache = args.random_cache or out / CACHE_NAME

    def measured(table: EnvTable) -> float:
        return random_return(table.rows[0].runs[0].config["env"], cache, episodes=episodes, label=table.label)

    bounds = task_bounds(comp, parse_bounds(args.bounds), measured)
    return compare_across_tasks(comp, bounds, reps=args.reps, seed=args.seed)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.reps < 1:
        print(f"--reps={args.reps} is invalid: must be >= 1", file=sys.stderr)
        return 2
    if args.aggregate and (bad := check_aggregate_args(args)):
        print(bad, file=sys.stderr)
        return 2
    try:
        comp = compare(args.paths, metric=args.metric, reps=args.reps, seed=args.seed, per_agent=args.per_agent)
    except (FileNotFoundError, ValueError) as exc:
        print(f"marl.report: {exc}", file=sys.stderr)
        return 2
    if not comp.tables and not comp.incomplete and not comp.missing:
        print(f"marl.report: no runs (config.yaml + metrics.jsonl) under {', '.join(map(str, args.paths))}",
              file=sys.stderr)
        return 1
    out = args.out or args.paths[0] / "report"
    across = None
    if args.aggregate:
        try:
            across = across_tasks(comp, args, out)
        except ValueError as exc:
            print(f"marl.report: {exc}", file=sys.stderr)
            return 2
    elif len(comp.tables) > 1:
        print(f"marl.report: {len(comp.tables)} tasks; add --aggregate to compare the algorithms across them",
              file=sys.stderr)
    files = write_report(comp, out, marl_eval=args.marl_eval, across=across)
    print(files["markdown"].read_text())
    print(f"Report written to {out.resolve()}: " + ", ".join(p.name for p in files.values()))
    if args.wandb:
        from marl.report.publish import publish  # only with --wandb: the plain report never loads it

        publish(comp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
