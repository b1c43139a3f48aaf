"""Compare experiments across seeds: ``python -m marl.report PATH... [--out DIR] [--marl-eval] [--wandb]``.

PATHs are sweep folders, run folders, or any folder above them. Runs are grouped by their config
minus the seed (:func:`marl.wandb_naming.experiment_key`, the same key as their W&B group), and
for each env the report gives the final and the best evaluation return of each group as mean and
interquartile mean (IQM) with 95% stratified-bootstrap confidence intervals over seeds (rliable).

It writes to ``--out`` (default ``<first PATH>/report``): ``report.md`` (the tables, also printed),
``curves_<env>.png`` (IQM learning curves with shaded CIs), ``summary.csv`` (one row per group),
``runs.csv`` (one row per run) and, with ``--marl-eval``, ``marl_eval.json``. Runs without a final
record (still running, preempted, failed) are listed by name; a group's numbers use its finished
runs, or, when none has finished, its latest evaluations (marked "in progress").
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from marl.config import flatten
from marl.report_runs import Run, describe, env_labels, find_runs, group_labels
from marl.report_stats import Curve, Estimate, learning_curve, mean_and_iqm

METRIC = "eval/return_mean"
STATS = ("final", "best")


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
    curve: Curve | None = None

    @property
    def seeds(self) -> list[Any]:
        return sorted((r.seed for r in self.runs), key=str)

    @property
    def env_steps(self) -> list[int]:
        return [int(r.records[-1].get("env_steps", 0)) for r in self.runs if r.records]


@dataclass
class EnvTable:
    label: str
    rows: list[Row]

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.label).strip("_") or "env"


@dataclass
class Comparison:
    tables: list[EnvTable]
    incomplete: list[Run]
    missing: list[str]
    metric: str = METRIC


def _wandb_group(run: Run) -> str:
    from omegaconf import OmegaConf

    from marl.wandb_naming import wandb_identity

    try:
        return str(wandb_identity(OmegaConf.create(run.config), run_dir=run.path)["group"])
    except Exception:
        return run.key


def compare(paths: Sequence[Path], metric: str = METRIC, reps: int = 2000, seed: int = 0,
            curve_reps: int = 1000) -> Comparison:
    """Find, group and aggregate the runs under ``paths``."""
    runs, missing = find_runs([Path(p) for p in paths])
    incomplete = [r for r in runs if not r.complete]
    usable = [r for r in runs if r.config is not None and r.evals(metric)]
    by_env: dict[str, dict[str, list[Run]]] = {}
    for run in usable:
        by_env.setdefault(run.env_key, {}).setdefault(run.key, []).append(run)
    env_names = env_labels({k: json.loads(k) for k in by_env})
    tables = []
    for env_key, groups in by_env.items():
        labels = group_labels({k: _without_env(g[0].config) for k, g in groups.items()})
        rows = []
        for key, group in groups.items():
            done = [r for r in group if r.complete]
            chosen = sorted(done or group, key=lambda r: str(r.seed))
            rows.append(Row(key=key, label=labels[key], mixer=str(flatten(chosen[0].config).get("mixer.name", "?")),
                            wandb_group=_wandb_group(chosen[0]), runs=chosen, in_progress=not done))
        scores = {stat: {row.key: np.array([_score(r, metric, stat) for r in row.runs]) for row in rows} for stat in STATS}
        for stat in STATS:
            estimates = mean_and_iqm(scores[stat], reps=reps, seed=seed)
            for row in rows:
                setattr(row, stat, estimates.get(row.key, {}))
        for row in rows:
            row.curve = learning_curve([r.evals(metric) for r in row.runs], reps=curve_reps, seed=seed)
        rows.sort(key=lambda r: (-r.final["iqm"].value if r.final else float("inf"), r.label))
        tables.append(EnvTable(env_names[env_key], rows))
    tables.sort(key=lambda t: t.label)
    return Comparison(tables=tables, incomplete=incomplete, missing=missing, metric=metric)


def _without_env(config: dict[str, Any] | None) -> dict[str, Any]:
    from marl.wandb_naming import experiment_config

    return {k: v for k, v in experiment_config(config or {}).items() if k != "env"}


def _score(run: Run, metric: str, stat: str) -> float:
    values = [v for _, v in run.evals(metric)]
    return values[-1] if stat == "final" else max(values)


# --- output ------------------------------------------------------------------------------------
def fmt(x: float) -> str:
    if not np.isfinite(x):
        return "nan"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def fmt_estimate(e: Estimate | None) -> str:
    return "—" if e is None else f"{fmt(e.value)} [{fmt(e.low)}, {fmt(e.high)}]"


def _steps(row: Row) -> str:
    steps = row.env_steps
    if not steps:
        return "—"
    return f"{min(steps)}" if min(steps) == max(steps) else f"{min(steps)}–{max(steps)}"


def to_markdown(comp: Comparison, images: dict[str, str] | None = None) -> str:
    """The report as markdown: a table per env, then the runs that are missing or unfinished."""
    out = [f"# Comparison of {sum(len(t.rows) for t in comp.tables)} experiments",
           "",
           f"`{comp.metric}` over seeds: mean and interquartile mean (IQM) with 95% stratified-bootstrap "
           "confidence intervals (rliable). *final*: the last evaluation of each run; *best*: its best "
           "evaluation. Rows are sorted by final IQM.",
           ""]
    for table in comp.tables:
        out += [f"## {table.label}", "",
                "| experiment | seeds | env steps | final mean [95% CI] | final IQM [95% CI] "
                "| best mean [95% CI] | best IQM [95% CI] |",
                "|---|---|---|---|---|---|---|"]
        for row in table.rows:
            label = row.label + (" (in progress)" if row.in_progress else "")
            out.append(f"| {label} | {len(row.runs)} | {_steps(row)} | {fmt_estimate(row.final.get('mean'))} "
                       f"| {fmt_estimate(row.final.get('iqm'))} | {fmt_estimate(row.best.get('mean'))} "
                       f"| {fmt_estimate(row.best.get('iqm'))} |")
        out.append("")
        if images and table.slug in images:
            out += [f"![{table.label}]({images[table.slug]})", ""]
    if comp.incomplete:
        out += ["## Unfinished or failed runs", "",
                "Not in a group's numbers when the group has finished runs:", ""]
        out += [f"- {describe(r)}: {r.problem}" for r in comp.incomplete] + [""]
    if comp.missing:
        out += ["## Missing runs", ""] + [f"- {m}" for m in comp.missing] + [""]
    return "\n".join(out)


def write_csv(comp: Comparison, path: Path) -> Path:
    """One row per experiment and env, every number of the tables."""
    head = ["env", "experiment", "mixer", "status", "seeds", "n_seeds", "env_steps", "wandb_group", "experiment_key"]
    head += [f"{s}_{a}{x}" for s in STATS for a in ("mean", "iqm") for x in ("", "_ci_low", "_ci_high")]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        for table in comp.tables:
            for row in table.rows:
                values = [table.label, row.label, row.mixer, "in progress" if row.in_progress else "complete",
                          " ".join(map(str, row.seeds)), len(row.runs), _steps(row), row.wandb_group, row.key]
                for stat in STATS:
                    for agg in ("mean", "iqm"):
                        e = getattr(row, stat).get(agg)
                        values += [e.value, e.low, e.high] if e else ["", "", ""]
                w.writerow(values)
    return path


def write_runs_csv(comp: Comparison, path: Path) -> Path:
    """One row per run: where it is, its group, seed, final and best return, or why it has none."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["env", "experiment", "seed", "final", "best", "env_steps", "status", "path"])
        for table in comp.tables:
            for row in table.rows:
                for run in row.runs:
                    w.writerow([table.label, row.label, run.seed, _score(run, comp.metric, "final"),
                                _score(run, comp.metric, "best"), run.records[-1].get("env_steps", ""),
                                "complete" if run.complete else run.problem, run.path])
        for run in comp.incomplete:
            if not any(run in row.runs for t in comp.tables for row in t.rows):
                w.writerow(["", "", run.seed, "", "", "", run.problem, run.path])
    return path


def write_marl_eval(comp: Comparison, path: Path) -> Path:
    """marl-eval's raw-data JSON: env -> task -> algorithm -> ``seed_<n>`` -> ``step_<i>`` records.

    Each step holds ``step_count`` (env steps) and ``return`` (a one-element list: the mean over
    that evaluation's episodes, which marl-eval accepts); ``absolute_metrics`` holds the final
    evaluation of a finished run.
    """
    data: dict[str, Any] = {}
    for table in comp.tables:
        for row in table.rows:
            env = row.runs[0].config["env"]
            task = next((str(env[k]) for k in ("id", "key", "map_name", "map", "scenario", "task") if env.get(k)),
                        str(env.get("name")))
            algo = data.setdefault(str(env.get("name")), {}).setdefault(task, {}).setdefault(row.label, {})
            for run in row.runs:
                evals = run.evals(comp.metric)
                record: dict[str, Any] = {f"step_{i}": {"step_count": s, "return": [v]} for i, (s, v) in enumerate(evals)}
                if run.complete:
                    record["absolute_metrics"] = {"return": [evals[-1][1]]}
                algo[f"seed_{run.seed}"] = record
    path.write_text(json.dumps(data, indent=1))
    return path


def write_report(comp: Comparison, out: Path, marl_eval: bool = False) -> dict[str, Path]:
    """Everything into ``out``; returns the files written by kind."""
    from marl.report_plot import plot_curves

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    images = {}
    for table in comp.tables:
        curves = {row.label: row.curve for row in table.rows if row.curve is not None}
        if curves:
            png = plot_curves(curves, table.label, out / f"curves_{table.slug}.png", comp.metric)
            files[f"curves_{table.slug}"] = png
            images[table.slug] = png.name
    files["markdown"] = out / "report.md"
    files["markdown"].write_text(to_markdown(comp, images))
    files["csv"] = write_csv(comp, out / "summary.csv")
    files["runs_csv"] = write_runs_csv(comp, out / "runs.csv")
    if marl_eval:
        files["marl_eval"] = write_marl_eval(comp, out / "marl_eval.json")
    return files


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m marl.report", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, help="sweep folders, run folders, or folders above them")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <first PATH>/report)")
    p.add_argument("--metric", default=METRIC, help=f"the evaluation metric to compare (default {METRIC})")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples for the tables (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.add_argument("--marl-eval", action="store_true", help="also write marl-eval compatible marl_eval.json")
    p.add_argument("--wandb", action="store_true", help="also publish the comparison as a W&B Report (online only)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.reps < 1:
        print(f"--reps={args.reps} is invalid: must be >= 1", file=sys.stderr)
        return 2
    try:
        comp = compare(args.paths, metric=args.metric, reps=args.reps, seed=args.seed)
    except FileNotFoundError as exc:
        print(f"marl.report: {exc}", file=sys.stderr)
        return 2
    if not comp.tables and not comp.incomplete and not comp.missing:
        print(f"marl.report: no runs (config.yaml + metrics.jsonl) under {', '.join(map(str, args.paths))}",
              file=sys.stderr)
        return 1
    out = args.out or args.paths[0] / "report"
    files = write_report(comp, out, marl_eval=args.marl_eval)
    print(files["markdown"].read_text())
    print(f"Report written to {out.resolve()}: " + ", ".join(p.name for p in files.values()))
    if args.wandb:
        from marl.report_wandb import publish

        publish(comp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
