"""The report's data: runs as read back from their folders, estimates, curves and the comparison.

Plain data classes with no behaviour beyond reading their own fields, so that every other module
of :mod:`marl.report` (discovery, statistics, aggregation, output, W&B publishing) can import them
and none has to import another one's logic: the package has no import cycle
(tests/test_architecture.py checks it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marl.wandb_naming import experiment_key

METRIC = "eval/return_mean"
STATS = ("final", "best")
EPYMARL_STATS = ("maximum", "average")  # EPyMARL's two metrics (docs/report.md), next to STATS


@dataclass
class Run:
    """One run folder as the report sees it. ``problem`` is why it has no final result, if so."""

    path: Path
    config: dict[str, Any] | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = False
    failed: bool = False  # stopped on a fault (diverged, disk full): never counted as a result
    problem: str | None = None
    warning: str = ""  # its learned value left its bound (run_folder.value_warning): listed, still counted
    divisor: float = 1.0  # every value of the compared metric is divided by it (--per-agent: the agents)

    @property
    def seed(self) -> Any:
        return (self.config or {}).get("seed")

    @property
    def key(self) -> str:
        """The experiment: runs with the same key differ only in their seed (and bookkeeping)."""
        assert self.config is not None
        return experiment_key(self.config)

    @property
    def env_key(self) -> str:
        assert self.config is not None
        return json.dumps(self.config.get("env"), sort_keys=True, default=str)

    def evals(self, metric: str) -> list[tuple[int, float]]:
        """``(env_steps, value)`` of every evaluation record that has ``metric`` (value / ``divisor``)."""
        return [(int(r["env_steps"]), float(r[metric]) / self.divisor) for r in self.records
                if metric in r and "env_steps" in r]

    def eval_counts(self, metric: str, unit: str) -> list[int | None]:
        """The ``unit`` clock (env_steps, episodes, grad_steps) at each evaluation of :meth:`evals`."""
        return [int(r[unit]) if unit in r else None for r in self.records if metric in r and "env_steps" in r]

    @property
    def wall_s(self) -> float | None:
        """Seconds the run took, summed over its attempts: the ``time`` of its last record."""
        last = next((r["time"] for r in reversed(self.records) if isinstance(r.get("time"), (int, float))), None)
        return None if last is None else float(last)

    @property
    def eval_schedule(self) -> tuple[int | None, str]:
        """``(eval.interval, eval.unit)`` of the run's config (interval None when it has none)."""
        ev = (self.config or {}).get("eval") or {}
        interval = ev.get("interval")
        return (int(interval) if isinstance(interval, (int, float)) and interval > 0 else None,
                str(ev.get("unit", "env_steps")))

    def score(self, metric: str, stat: str) -> float:
        """The run's ``final`` (last), ``best`` (highest) or ``average`` (mean of all) evaluation of ``metric``."""
        values = [v for _, v in self.evals(metric)]
        if stat == "final":
            return values[-1]
        if stat == "average":
            return float(np.mean(values))
        return max(values)


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its 95% confidence interval."""

    value: float
    low: float
    high: float


@dataclass
class Curve:
    """IQM and its 95% CI at each evaluation step; ``runs`` is how many runs reached each step."""

    steps: np.ndarray
    iqm: np.ndarray
    low: np.ndarray
    high: np.ndarray
    runs: np.ndarray


@dataclass
class Row:
    """One experiment (a group of seeds) in one env's table."""

    key: str
    label: str
    mixer: str
    wandb_group: str
    runs: list[Run]
    in_progress: bool
    final: dict[str, Estimate] = field(default_factory=dict)
    best: dict[str, Estimate] = field(default_factory=dict)
    maximum: dict[str, Estimate] = field(default_factory=dict)  # over seeds, at maximum_step
    average: dict[str, Estimate] = field(default_factory=dict)
    maximum_step: int | None = None  # env steps of the evaluation point where the mean over seeds peaks
    maximum_scores: dict[int, float] = field(default_factory=dict)  # index in runs -> value at that point
    curve: Curve | None = None

    @property
    def seeds(self) -> list[Any]:
        return sorted((r.seed for r in self.runs), key=str)

    @property
    def wall_s(self) -> list[float]:
        return [w for r in self.runs if (w := r.wall_s) is not None]

    @property
    def env_steps(self) -> list[int]:
        return [int(r.records[-1].get("env_steps", 0)) for r in self.runs if r.records]


@dataclass
class EnvTable:
    """The experiments compared on one env (one table, one curves figure)."""

    label: str
    rows: list[Row]
    divisor: float | None = None  # --per-agent: what the env's returns were divided by (None: team returns)

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.label).strip("_") or "env"


@dataclass
class Comparison:
    """Everything the report shows: a table per env, and the runs that are unfinished or missing."""

    tables: list[EnvTable]
    incomplete: list[Run]
    missing: list[str]
    metric: str = METRIC
    per_agent: bool = False  # --per-agent: every value of the metric divided by the run's number of agents
