"""Group the runs into experiments per env and aggregate each experiment over its seeds.

Runs are grouped by their config minus the seed (:attr:`marl.report.model.Run.key`, the same key
as their W&B group), one table per env. A group's numbers use its finished runs, or, when none
has finished, its latest evaluations (the row is then marked "in progress").

Next to the final and best return, EPyMARL's two metrics (docs/report.md): the *maximum* return
(the evaluation point at which the mean over seeds is highest, :func:`marl.report.stats.maximum_over_seeds`)
and the *average* return (each run's mean over its evaluations). With ``per_agent``, every value of
the metric is divided by the run's :func:`marl.report.runs.return_divisor` first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from marl.config import flatten
from marl.report.labels import env_labels, group_labels
from marl.report.model import METRIC, STATS, Comparison, EnvTable, Row, Run
from marl.report.runs import find_runs, return_divisor
from marl.report.stats import evaluation_points, learning_curve, maximum_over_seeds, mean_and_iqm


def _wandb_group(run: Run) -> str:
    from omegaconf import OmegaConf

    from marl.wandb_naming import wandb_identity

    try:
        return str(wandb_identity(OmegaConf.create(run.config), run_dir=run.path)["group"])
    except Exception:
        return run.key


def compare(paths: Sequence[Path], metric: str = METRIC, reps: int = 2000, seed: int = 0,
            curve_reps: int = 1000, per_agent: bool = False) -> Comparison:
    """Find, group and aggregate the runs under ``paths``.

    ``per_agent``: divide every value of ``metric`` by the run's number of agents where its team
    reward sums the agents' rewards (:func:`marl.report.runs.return_divisor`; ValueError naming the
    run when that number is unknown).
    """
    runs, missing = find_runs([Path(p) for p in paths])
    incomplete = [r for r in runs if not r.complete]
    usable = [r for r in runs if r.config is not None and not r.failed and r.evals(metric)]
    if per_agent:
        for run in usable:
            run.divisor = float(return_divisor(run))
    by_env = group_runs(usable)
    env_names, labels = name_groups(by_env)
    tables = []
    for env_key, groups in by_env.items():
        rows = []
        for key, group in groups.items():
            done = [r for r in group if r.complete]
            chosen = sorted(done or group, key=lambda r: str(r.seed))
            rows.append(Row(key=key, label=labels[key], mixer=str(flatten(chosen[0].config).get("mixer.name", "?")),
                            wandb_group=_wandb_group(chosen[0]), runs=chosen, in_progress=not done))
        scores = {stat: {row.key: np.array([r.score(metric, stat) for r in row.runs]) for row in rows}
                  for stat in STATS}
        for stat in STATS:
            estimates = mean_and_iqm(scores[stat], reps=reps, seed=seed)
            for row in rows:
                setattr(row, stat, estimates.get(row.key, {}))
        add_epymarl_metrics(rows, metric, reps=reps, seed=seed)
        for row in rows:
            row.curve = learning_curve([r.evals(metric) for r in row.runs], reps=curve_reps, seed=seed)
        rows.sort(key=lambda r: (-r.final["iqm"].value if r.final else float("inf"), r.label))
        divisors = {r.divisor for row in rows for r in row.runs}
        tables.append(EnvTable(env_names[env_key], rows, divisor=max(divisors) if per_agent else None))
    tables.sort(key=lambda t: t.label)
    return Comparison(tables=tables, incomplete=incomplete, missing=missing, metric=metric, per_agent=per_agent)


def group_runs(runs: Sequence[Run]) -> dict[str, dict[str, list[Run]]]:
    """Runs per env (:attr:`Run.env_key`), then per experiment (:attr:`Run.key`: the config minus the seed),
    in the order first seen. ``python -m marl.evaluate`` groups its results with it too."""
    by_env: dict[str, dict[str, list[Run]]] = {}
    for run in runs:
        by_env.setdefault(run.env_key, {}).setdefault(run.key, []).append(run)
    return by_env


def name_groups(by_env: dict[str, dict[str, list[Run]]]) -> tuple[dict[str, str], dict[str, str]]:
    """Readable names of :func:`group_runs`' envs and experiments: ``({env_key: label}, {key: label})``
    (an experiment's label says what differs from the other experiments on its env)."""
    env_names = env_labels({k: json.loads(k) for k in by_env})
    labels: dict[str, str] = {}
    for groups in by_env.values():
        labels.update(group_labels({k: _without_env(g[0].config) for k, g in groups.items()}))
    return env_names, labels


def seed_points(run: Run, metric: str) -> dict[int, tuple[int, float]]:
    """``{evaluation point: (env_steps, value)}`` of one run (:func:`marl.report.stats.evaluation_points`)."""
    interval, unit = run.eval_schedule
    evals = run.evals(metric)
    points = evaluation_points(run.eval_counts(metric, unit), interval)
    return dict(zip(points, evals))


def add_epymarl_metrics(rows: list[Row], metric: str, reps: int = 2000, seed: int = 0) -> None:
    """Set each row's ``maximum`` (with ``maximum_step``, ``maximum_scores``) and ``average`` estimates."""
    maxima = {}
    for row in rows:
        found = maximum_over_seeds([seed_points(r, metric) for r in row.runs])
        if found is not None:
            _, row.maximum_step, row.maximum_scores = found
            maxima[row.key] = np.array(list(row.maximum_scores.values()))
    averages = {row.key: np.array([r.score(metric, "average") for r in row.runs]) for row in rows}
    for stat, scores in (("maximum", maxima), ("average", averages)):
        estimates = mean_and_iqm(scores, reps=reps, seed=seed)
        for row in rows:
            setattr(row, stat, estimates.get(row.key, {}))


def _without_env(config: dict[str, Any] | None) -> dict[str, Any]:
    from marl.wandb_naming import experiment_config

    return {k: v for k, v in experiment_config(config or {}).items() if k != "env"}
