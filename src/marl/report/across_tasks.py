"""Algorithms compared across tasks (``--aggregate``): per-task normalised scores and rliable's aggregates.

The per-env comparison (:func:`marl.report.aggregate.compare`) answers "which experiment is better
on this env"; this module answers "over these tasks, which algorithm is better, by how much, how
sure are we", with the statistics of Agarwal et al. (NeurIPS 2021) as rliable computes them:

1. **Tasks** are the env tables of the comparison. **Algorithms** are matched across tasks by their
   config minus the env and the seed, restricted to the keys that differ between the experiments of
   some task (:func:`algorithm_ids`): a key that changes only with the task (a per-env preset's
   ``num_envs``) does not split an algorithm, a key that separates two experiments anywhere does.
2. **Normalisation** per task (:func:`normalise`): min-max between a lower and an upper reference,
   by default the return of a uniform-random policy (:mod:`marl.report.random_policy`) and the best
   evaluation return that any compared run reached on that task; ``--bounds TASK=LOW:HIGH`` gives
   either or both per task.
3. **Aggregates** over the tasks on which every algorithm has runs: IQM, mean, median and
   optimality gap of the runs' normalised final scores with 95% stratified-bootstrap CIs,
   score-distribution performance profiles with CI bands, the probability of improvement of every
   pair, and the IQM over training against env steps (:func:`compare_across_tasks`).

A task that cannot enter the aggregate (no run reached an evaluation, an algorithm missing, bounds
that do not span a range) is kept in :attr:`AcrossTasks.excluded` with the reason, which the report
prints: nothing is dropped silently.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from marl.config import flatten
from marl.report.aggregate import _without_env, seed_points
from marl.report.labels import differing_keys, env_labels
from marl.report.model import METRIC, Comparison, Curve, EnvTable, Estimate, Row, Run
from marl.report.stats import _interval_estimates, _rliable, iqm_per_point

AGGREGATES = ("iqm", "mean", "median", "optimality_gap")
PROFILE_POINTS = 101
PROFILE_TABLE_TAUS = (0.25, 0.5, 0.75, 0.9)  # the thresholds at which report.md tabulates the profiles


@dataclass(frozen=True)
class Bounds:
    """A task's normalisation: ``(score - low) / (high - low)``; each side says where it came from."""

    low: float
    high: float
    low_source: str  # "random policy" or "--bounds"
    high_source: str  # "best run" or "--bounds"


@dataclass
class Task:
    """One task (an env table) as the aggregate sees it; ``excluded`` is why it is not in the aggregate."""

    label: str
    bounds: Bounds | None = None
    final: dict[str, np.ndarray] = field(default_factory=dict)  # algorithm -> raw final score per run
    normalised: dict[str, np.ndarray] = field(default_factory=dict)  # algorithm -> normalised final per run
    rows: dict[str, Row] = field(default_factory=dict)  # algorithm -> its experiment on this task
    excluded: str | None = None


@dataclass
class Algorithm:
    """An algorithm across tasks: a short label, and the settings that identify it."""

    id: str
    label: str
    settings: str


@dataclass
class AcrossTasks:
    """Everything the across-task part of the report shows."""

    algorithms: list[Algorithm]
    tasks: list[Task]  # every task, the excluded ones with their reason
    runs_per_task: dict[str, int] = field(default_factory=dict)  # algorithm label -> runs per task used
    aggregates: dict[str, dict[str, Estimate]] = field(default_factory=dict)  # label -> AGGREGATES
    improvement: list[tuple[str, str, Estimate]] = field(default_factory=list)  # P(x > y) per pair
    taus: np.ndarray = field(default_factory=lambda: np.zeros(0))
    profiles: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)  # value, low, high
    curves: dict[str, Curve] = field(default_factory=dict)  # aggregate IQM over training; ``runs``: per task
    notes: list[str] = field(default_factory=list)  # what the reader must know (seeds cut, rows in progress)

    @property
    def included(self) -> list[Task]:
        return [t for t in self.tasks if t.excluded is None]


# --- bounds ----------------------------------------------------------------------------------------

def parse_bounds(items: list[str]) -> dict[str, tuple[float | None, float | None]]:
    """``["lbf=0:1", "mpe=-80:"]`` -> ``{"lbf": (0, 1), "mpe": (-80, None)}``: an empty side keeps its default."""
    out: dict[str, tuple[float | None, float | None]] = {}
    for item in items:
        task, sep, rest = item.rpartition("=")
        low, colon, high = rest.partition(":")
        try:
            if not sep or not task or not colon:
                raise ValueError
            out[task] = (float(low) if low.strip() else None, float(high) if high.strip() else None)
        except ValueError:
            raise ValueError(f"--bounds {item!r}: expected TASK=LOW:HIGH (numbers; leave a side empty to keep "
                             "its default), e.g. lbf=0:1 or mpe=-80:") from None
    return out


def task_bounds(comp: Comparison, given: dict[str, tuple[float | None, float | None]],
                random_return: Callable[[EnvTable], float]) -> dict[str, Bounds]:
    """Each table's bounds: ``given`` sides first, else the random-policy return (``random_return``, in
    the table's units: divided like its runs under ``--per-agent``) and the best evaluation of any of
    its runs. A task named in ``given`` that is not compared is an error listing the tasks."""
    labels = [t.label for t in comp.tables]
    unknown = sorted(set(given) - set(labels))
    if unknown:
        raise ValueError(f"--bounds names {', '.join(unknown)}, which is not a compared task; the tasks are: "
                         f"{', '.join(labels) or 'none'}")
    out = {}
    for table in comp.tables:
        low, high = given.get(table.label, (None, None))
        low_source = high_source = "--bounds"
        if low is None:
            if comp.metric != METRIC:
                raise ValueError(f"--aggregate --metric {comp.metric}: the random policy is measured in returns "
                                 f"only; give task {table.label}'s lower bound with --bounds {table.label}=LOW:HIGH")
            low, low_source = random_return(table) / (table.divisor or 1.0), "random policy"
        if high is None:
            high = max(v for row in table.rows for r in row.runs for _, v in r.evals(comp.metric))
            high_source = "best run"
        out[table.label] = Bounds(float(low), float(high), low_source, high_source)
    return out


def normalise(scores: np.ndarray, bounds: Bounds) -> np.ndarray:
    """Min-max normalisation: the lower bound maps to 0, the upper to 1 (scores outside stay outside)."""
    return (np.asarray(scores, dtype=float) - bounds.low) / (bounds.high - bounds.low)


# --- algorithms ------------------------------------------------------------------------------------

def algorithm_ids(tables: list[EnvTable]) -> dict[tuple[str, str], str]:
    """``(table label, row key) -> algorithm id``: the row's config minus env and seed, on the keys that
    differ between the experiments of at least one task (and the mixer's name)."""
    keys = {"mixer.name"}
    for table in tables:
        keys |= set(differing_keys([_without_env(row.runs[0].config) for row in table.rows]))
    out = {}
    for table in tables:
        for row in table.rows:
            flat = flatten(_without_env(row.runs[0].config))
            out[(table.label, row.key)] = json.dumps({k: flat.get(k) for k in sorted(keys)}, default=str)
    return out


def algorithm_labels(ids: list[str]) -> list[Algorithm]:
    """The mixer's name where no other algorithm has it, else the mixer and what tells them apart."""
    settings = {i: json.loads(i) for i in ids}
    mixer = {i: str(s.get("mixer.name")) for i, s in settings.items()}
    varying = [k for k in differing_keys(list(settings.values())) if k != "mixer.name"]
    out = []
    for i in ids:
        same = [j for j in ids if mixer[j] == mixer[i]]
        apart = [k for k in differing_keys([settings[j] for j in same]) if k != "mixer.name"] if len(same) > 1 else []
        label = mixer[i] + (f" ({', '.join(f'{k}={settings[i][k]}' for k in apart)})" if apart else "")
        out.append(Algorithm(i, label, ", ".join(f"{k}={settings[i][k]}" for k in varying
                                                 if settings[i][k] is not None)))
    return out


# --- the comparison --------------------------------------------------------------------------------

def tasks_without_evaluations(comp: Comparison, tables: list[EnvTable]) -> list[Task]:
    """Tasks whose runs (unfinished or failed) reached no evaluation: no table, so said here."""
    by_env: dict[str, list[Run]] = {}
    for run in comp.incomplete:
        if run.config is not None and not run.evals(comp.metric):
            by_env.setdefault(run.env_key, []).append(run)
    compared = {r.env_key for t in tables for row in t.rows for r in row.runs}
    by_env = {k: v for k, v in by_env.items() if k not in compared}
    labels = env_labels({k: json.loads(k) for k in by_env})
    return [Task(labels[k], excluded=f"no run reached an evaluation ({len(v)} run{'s' if len(v) != 1 else ''}, "
                                     f"{sum(r.failed for r in v)} failed)") for k, v in by_env.items()]


def compare_across_tasks(comp: Comparison, bounds: dict[str, Bounds], reps: int = 2000, seed: int = 0,
                         curve_reps: int = 1000) -> AcrossTasks:
    """The aggregate over the tasks of ``comp`` on which every algorithm has runs (see the module docstring)."""
    ids = algorithm_ids(comp.tables)
    algorithms = algorithm_labels(list(dict.fromkeys(ids.values())))
    label = {a.id: a.label for a in algorithms}
    tasks = []
    for table in comp.tables:
        task = Task(table.label, bounds=bounds[table.label])
        for row in table.rows:
            algo = label[ids[(table.label, row.key)]]
            task.rows[algo] = row
            task.final[algo] = np.array([r.score(comp.metric, "final") for r in row.runs])
        b = task.bounds
        assert b is not None
        if not b.high > b.low:
            task.excluded = (f"upper bound {b.high:g} ({b.high_source}) is not above lower bound {b.low:g} "
                             f"({b.low_source}): nothing to normalise by; give --bounds {table.label}=LOW:HIGH")
        else:
            task.normalised = {a: normalise(s, b) for a, s in task.final.items()}
            lacking = [a.label for a in algorithms if a.label not in task.rows]
            if lacking:
                task.excluded = (f"only {', '.join(task.rows)} ha{'s' if len(task.rows) == 1 else 've'} runs here "
                                 f"(no {', '.join(lacking)}): the aggregate compares algorithms on the same tasks")
        tasks.append(task)
    tasks += tasks_without_evaluations(comp, comp.tables)
    result = AcrossTasks(algorithms=algorithms, tasks=tasks)
    included = result.included
    if not included:
        result.notes.append("no task has runs of every algorithm with usable bounds: no aggregate")
        return result
    scores = _score_matrices(result, included)
    result.aggregates = _aggregates(scores, reps, seed)
    order = sorted(scores, key=lambda a: -result.aggregates[a]["iqm"].value)
    result.improvement = _improvement({a: scores[a] for a in order}, reps, seed)
    result.taus, result.profiles = _profiles(scores, reps, seed)
    result.curves = _training_curves(result, included, comp.metric, curve_reps, seed)
    in_progress = [f"{a} on {t.label}" for t in included for a, row in t.rows.items() if row.in_progress]
    if in_progress:
        result.notes.append("in progress (no finished run; their latest evaluations count as final): "
                            + ", ".join(in_progress))
    return result


def _score_matrices(result: AcrossTasks, included: list[Task]) -> dict[str, np.ndarray]:
    """Per algorithm, the normalised final scores as rliable wants them: (runs, tasks), the same number
    of runs on every task (the first ones by seed, where a task has more: said in the notes)."""
    scores = {}
    for algo in result.algorithms:
        counts = {t.label: len(t.normalised[algo.label]) for t in included}
        n = min(counts.values())
        result.runs_per_task[algo.label] = n
        if len(set(counts.values())) > 1:
            result.notes.append(f"{algo.label}: {n} runs per task are used (the first by seed), as its fewest "
                                f"on a task; it has {', '.join(f'{c} on {t}' for t, c in counts.items())}")
        scores[algo.label] = np.stack([t.normalised[algo.label][:n] for t in included], axis=1)
    return scores


def _aggregates(scores: dict[str, np.ndarray], reps: int, seed: int) -> dict[str, dict[str, Estimate]]:
    _, metrics = _rliable()

    def func(s: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(s), metrics.aggregate_mean(s), metrics.aggregate_median(s),
                         metrics.aggregate_optimality_gap(s)])

    points, intervals = _interval_estimates(scores, func, reps, seed)
    return {a: {name: Estimate(float(points[a][i]), float(intervals[a][0][i]), float(intervals[a][1][i]))
                for i, name in enumerate(AGGREGATES)} for a in scores}


def _improvement(scores: dict[str, np.ndarray], reps: int, seed: int) -> list[tuple[str, str, Estimate]]:
    """P(X > Y) for every pair, X before Y in the order of ``scores`` (the caller's: by aggregate IQM)."""
    _, metrics = _rliable()
    names = list(scores)
    pairs = {f"{x}\0{y}": [scores[x], scores[y]] for i, x in enumerate(names) for y in names[i + 1:]}
    if not pairs:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy on identical samples within a resample
        points, intervals = _interval_estimates(pairs, metrics.probability_of_improvement, reps, seed)
    return [(*k.split("\0"), Estimate(float(points[k]), *map(float, np.ravel(intervals[k]))))  # type: ignore[misc]
            for k in pairs]


def _profiles(scores: dict[str, np.ndarray], reps: int, seed: int
              ) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Score distributions (the fraction of runs, over all tasks, scoring above τ) with CI bands."""
    library, _ = _rliable()
    every = np.concatenate([s.ravel() for s in scores.values()])
    taus = np.linspace(min(0.0, float(every.min())), max(1.0, float(every.max())), PROFILE_POINTS)
    taus = np.unique(np.concatenate([taus, PROFILE_TABLE_TAUS]))
    points, intervals = _interval_estimates(scores, lambda s: library.score_distributions(s, taus), reps, seed)
    return taus, {a: (points[a], intervals[a][0], intervals[a][1]) for a in scores}


def _snapped(run: Run, metric: str) -> list[tuple[int, float]]:
    """A run's evaluations at the multiple of ``eval.interval`` that triggered each (so that a batched
    env's 50003 is 50000, :func:`marl.report.stats.evaluation_points`), or at their env steps when the
    schedule is not in env steps."""
    interval, unit = run.eval_schedule
    points = seed_points(run, metric)
    if interval is None or unit != "env_steps":
        return sorted(points.values())
    return [(p * interval, v) for p, (_, v) in sorted(points.items())]


def _training_curves(result: AcrossTasks, included: list[Task], metric: str, reps: int, seed: int
                     ) -> dict[str, Curve]:
    """Aggregate IQM of the normalised evaluations against env steps, on the env steps that every used
    run of every included task covered (runs interpolated between their own evaluations, never beyond)."""
    runs = {(t.label, a.label): t.rows[a.label].runs[:result.runs_per_task[a.label]]
            for t in included for a in result.algorithms}
    bounds: dict[str, Bounds] = {t.label: t.bounds for t in included if t.bounds is not None}
    evals = {k: [[(s, float(normalise(np.array(v), bounds[k[0]]))) for s, v in _snapped(r, metric)] for r in rs]
             for k, rs in runs.items()}
    task_grids = []
    for t in included:
        steps = sorted({s for a in result.algorithms for e in evals[(t.label, a.label)] for s, _ in e})
        task_grids.append(np.array(steps, dtype=float))
    if any(g.size == 0 for g in task_grids):
        return {}
    start, end = max(g[0] for g in task_grids), min(g[-1] for g in task_grids)
    grid = min((g[(g >= start) & (g <= end)] for g in task_grids), key=len)
    curves: dict[str, np.ndarray] = {}
    for a in result.algorithms:
        per_task = []
        for t in included:
            rows = []
            for e in evals[(t.label, a.label)]:
                xs, ys = np.array([s for s, _ in e], dtype=float), np.array([v for _, v in e])
                inside = (grid >= xs[0]) & (grid <= xs[-1])
                rows.append(np.where(inside, np.interp(grid, xs, ys), np.nan))
            per_task.append(np.array(rows))
        curves[a.label] = np.stack(per_task, axis=1)  # (runs, tasks, points)
    covered = np.all([~np.isnan(c).any(axis=(0, 1)) for c in curves.values()], axis=0)
    if not covered.any():
        result.notes.append("over training: no env step is covered by every run of every task; no curve")
        return {}
    if not covered.all():
        result.notes.append(f"over training: {int((~covered).sum())} of {grid.size} evaluation steps left out "
                            "(not reached by every run of every task)")
    grid, curves = grid[covered], {a: c[..., covered] for a, c in curves.items()}
    points, intervals = _interval_estimates(curves, iqm_per_point, reps, seed)
    return {a: Curve(steps=grid, iqm=points[a], low=intervals[a][0], high=intervals[a][1],
                     runs=np.full(grid.size, c.shape[0])) for a, c in curves.items()}  # runs per task
