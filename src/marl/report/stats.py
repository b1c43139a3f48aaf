"""Statistics over seeds with ``rliable`` (Agarwal et al. 2021): mean, IQM, stratified bootstrap CIs.

Every interval here comes from :func:`rliable.library.get_interval_estimates` (percentile
stratified bootstrap over runs); aggregates are rliable's ``aggregate_mean`` and
``aggregate_iqm``. For learning curves the IQM is taken per evaluation point; it is computed for
all points at once with ``scipy.stats.trim_mean(..., 0.25, axis=0)``, which is exactly what
``rliable.metrics.aggregate_iqm`` computes for one point (a test checks it) but 15x faster.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from marl.report.model import Curve, Estimate


def _rliable() -> tuple[Any, Any]:
    """rliable's ``library`` and ``metrics`` modules, with a clear error when they are missing."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from rliable import library, metrics
    except ImportError as exc:
        raise SystemExit(f"marl.report needs rliable and matplotlib: pip install -e '.[report]' ({exc})") from exc
    return library, metrics


def _interval_estimates(score_dict: dict[str, np.ndarray], func: Any, reps: int, seed: int) -> tuple[dict, dict]:
    """rliable's ``get_interval_estimates``, reproducible for a given ``seed``.

    rliable's stratified bootstraps draw their resampling indices from numpy's *global* RNG
    (``np.random.choice`` in ``StratifiedBootstrap.update_indices``; rliable 1.x), not from the
    ``random_state`` they are given, so the global RNG is seeded here for the call and restored after.
    """
    library, _ = _rliable()
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():  # arch warns that rliable passes a RandomState the old way
            warnings.simplefilter("ignore", FutureWarning)
            return library.get_interval_estimates(score_dict, func, reps=reps, confidence_interval_size=0.95,
                                                  random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(saved)


def mean_and_iqm(scores: dict[str, np.ndarray], reps: int = 2000, seed: int = 0) -> dict[str, dict[str, Estimate]]:
    """For each name, ``{"mean": Estimate, "iqm": Estimate}`` of its scores (one per run/seed)."""
    _, metrics = _rliable()

    def func(s: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_mean(s), metrics.aggregate_iqm(s)])

    data = {k: np.asarray(v, dtype=float).reshape(-1, 1) for k, v in scores.items() if len(v)}
    if not data:
        return {}
    points, intervals = _interval_estimates(data, func, reps, seed)
    return {k: {name: Estimate(float(points[k][i]), float(intervals[k][0][i]), float(intervals[k][1][i]))
                for i, name in enumerate(("mean", "iqm"))}
            for k in data}


def iqm_per_point(scores: np.ndarray) -> np.ndarray:
    """IQM over runs (and tasks) at each point of ``scores`` shaped ``(runs, tasks, points)``."""
    import scipy.stats

    return scipy.stats.trim_mean(scores.reshape(-1, scores.shape[-1]), proportiontocut=0.25, axis=0)


def align(evals: list[list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Put each run's evaluations on one grid of env steps (that of the run with the most points).

    Runs that evaluated at other steps (variable episode lengths) are linearly interpolated; a run
    has no value (NaN) outside the steps it covered, so a shorter run never stretches its last value.
    """
    evals = [sorted(e) for e in evals if e]
    if not evals:
        return np.zeros(0), np.zeros((0, 0))
    grid = np.array([s for s, _ in max(evals, key=len)], dtype=float)
    matrix = np.full((len(evals), len(grid)), np.nan)
    for i, run in enumerate(evals):
        xs = np.array([s for s, _ in run], dtype=float)
        ys = np.array([v for _, v in run], dtype=float)
        inside = (grid >= xs[0]) & (grid <= xs[-1])
        matrix[i, inside] = np.interp(grid[inside], xs, ys)
    return grid, matrix


def learning_curve(evals: list[list[tuple[int, float]]], reps: int = 1000, seed: int = 0) -> Curve | None:
    """IQM over runs with stratified-bootstrap 95% CIs at each evaluation step.

    Steps are bootstrapped in blocks that the same runs reached (normally one block: all runs,
    all steps), so one rliable call covers a whole sweep's curve.
    """
    grid, matrix = align(evals)
    if grid.size == 0:
        return None
    covered = ~np.isnan(matrix)
    iqm, low, high = (np.full(grid.size, np.nan) for _ in range(3))
    start = 0
    while start < grid.size:
        end = start
        while end < grid.size and (covered[:, end] == covered[:, start]).all():
            end += 1
        rows = covered[:, start]
        block = matrix[rows][:, start:end].reshape(int(rows.sum()), 1, end - start)
        points, intervals = _interval_estimates({"c": block}, iqm_per_point, reps, seed)
        iqm[start:end], low[start:end], high[start:end] = points["c"], intervals["c"][0], intervals["c"][1]
        start = end
    return Curve(steps=grid, iqm=iqm, low=low, high=high, runs=covered.sum(axis=0))


def evaluation_points(counts: list[int | None], interval: int | None) -> list[int]:
    """The group's evaluation point of each of one run's evaluations, in order (for the maximum return).

    With an evaluation schedule (``eval.interval`` in ``eval.unit``), an evaluation counted ``c``
    on that clock is point ``c // interval``: the multiple of the interval that triggered it
    (:class:`marl.clock.Every` fires at the first count at or past each multiple, so a batched env
    that overshoots, ``50003`` for ``50000``, still lands on its multiple, and a multiple that was
    jumped over leaves its point empty instead of shifting the later ones). An evaluation in the
    same interval as the run's previous one (the final evaluation at a ``t_max`` that is not a
    multiple of the interval) takes the next point. Without a schedule (or a count), point =
    evaluation index.
    """
    points: list[int] = []
    for i, count in enumerate(counts):
        point = i if interval is None or count is None else int(count // interval)
        if points and point <= points[-1]:
            point = points[-1] + 1
        points.append(point)
    return points


def maximum_over_seeds(runs: list[dict[int, tuple[int, float]]]) -> tuple[int, int, dict[int, float]] | None:
    """EPyMARL's maximum return: the evaluation point at which the mean over seeds is highest.

    ``runs`` holds, per seed, ``{point: (env_steps, value)}`` (points from
    :func:`evaluation_points`). Only the points that the most seeds evaluated are candidates (all
    seeds, unless no point is common to all: a seed that stopped early, still running, does not
    let a later point that fewer seeds reached win on a smaller sample). Ties go to the earliest
    point. Returns ``(point, env_steps, {seed index: value})``, ``env_steps`` being the earliest
    env step at which a seed evaluated that point; None when no seed has an evaluation.
    """
    reached: dict[int, int] = {}
    for run in runs:
        for point in run:
            reached[point] = reached.get(point, 0) + 1
    if not reached:
        return None
    most = max(reached.values())
    candidates = sorted(p for p, n in reached.items() if n == most)
    means = [np.mean([run[p][1] for run in runs if p in run]) for p in candidates]
    point = candidates[int(np.argmax(means))]
    values = {i: run[point][1] for i, run in enumerate(runs) if point in run}
    steps = min(run[point][0] for run in runs if point in run)
    return point, steps, values
