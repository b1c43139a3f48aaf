"""The report's files: ``report.md``, ``curves_<env>.png``, ``summary.csv``, ``runs.csv`` and,
on request, marl-eval's ``marl_eval.json``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marl.report.markdown import across_tasks_markdown, steps_label, to_markdown
from marl.report.model import EPYMARL_STATS, STATS, Comparison
from marl.report.plot import plot_aggregates, plot_curves, plot_improvement, plot_profiles

if TYPE_CHECKING:
    from marl.report.across_tasks import AcrossTasks


def write_csv(comp: Comparison, path: Path) -> Path:
    """One row per experiment and env, every number of the tables.

    After the final/best columns: EPyMARL's ``maximum_*`` and ``average_*`` (mean and IQM with CIs),
    ``maximum_env_steps`` (where the mean over seeds peaks), ``maximum_n_seeds`` (the seeds that
    evaluated that point) and ``return_divisor`` (what ``--per-agent`` divided the values by; empty
    for team returns).
    """
    aggs = [f"{s}_{a}{x}" for s in STATS for a in ("mean", "iqm") for x in ("", "_ci_low", "_ci_high")]
    epymarl = [f"{s}_{a}{x}" for s in EPYMARL_STATS for a in ("mean", "iqm") for x in ("", "_ci_low", "_ci_high")]
    head = ["env", "experiment", "mixer", "status", "seeds", "n_seeds", "env_steps", "wandb_group", "experiment_key"]
    head += aggs + epymarl + ["maximum_env_steps", "maximum_n_seeds", "return_divisor"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        for table in comp.tables:
            for row in table.rows:
                values = [table.label, row.label, row.mixer, "in progress" if row.in_progress else "complete",
                          " ".join(map(str, row.seeds)), len(row.runs), steps_label(row), row.wandb_group, row.key]
                for stat in STATS + EPYMARL_STATS:
                    for agg in ("mean", "iqm"):
                        e = getattr(row, stat).get(agg)
                        values += [e.value, e.low, e.high] if e else ["", "", ""]
                values += ["" if row.maximum_step is None else row.maximum_step, len(row.maximum_scores),
                           "" if table.divisor is None else table.divisor]
                w.writerow(values)
    return path


def _blank_if_none(value: object) -> object:
    return "" if value is None else value


def write_runs_csv(comp: Comparison, path: Path) -> Path:
    """One row per run: where it is, its group, seed, final and best return, or why it has none; then its
    average return, its value at its group's maximum-return step (empty when it did not evaluate it) and
    its wall time in seconds (summed over its attempts)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["env", "experiment", "seed", "final", "best", "env_steps", "status", "path", "average",
                    "at_maximum", "wall_s"])
        for table in comp.tables:
            for row in table.rows:
                for i, run in enumerate(row.runs):
                    w.writerow([table.label, row.label, run.seed, run.score(comp.metric, "final"),
                                run.score(comp.metric, "best"), run.records[-1].get("env_steps", ""),
                                "complete" if run.complete else run.problem, run.path,
                                run.score(comp.metric, "average"), row.maximum_scores.get(i, ""),
                                _blank_if_none(run.wall_s)])
        for run in comp.incomplete:
            if not any(run in row.runs for t in comp.tables for row in t.rows):
                w.writerow(["", "", run.seed, "", "", "", run.problem, run.path, "", "", _blank_if_none(run.wall_s)])
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


def write_report(comp: Comparison, out: Path, marl_eval: bool = False,
                 across: AcrossTasks | None = None) -> dict[str, Path]:
    """Everything into ``out``; returns the files written by kind. ``across`` (``--aggregate``): the
    across-task part too, appended to report.md (:func:`write_across_tasks`)."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    images = {}
    for table in comp.tables:
        curves = {row.label: row.curve for row in table.rows if row.curve is not None}
        if curves:
            metric = comp.metric + (" per agent" if table.divisor is not None else "")
            png = plot_curves(curves, table.label, out / f"curves_{table.slug}.png", metric)
            files[f"curves_{table.slug}"] = png
            images[table.slug] = png.name
    files["markdown"] = out / "report.md"
    text = to_markdown(comp, images)
    if across is not None:
        across_files = write_across_tasks(across, out)
        files.update(across_files)
        text += "\n" + across_tasks_markdown(across, comp.metric, {k: p.name for k, p in across_files.items()})
    files["markdown"].write_text(text)
    files["csv"] = write_csv(comp, out / "summary.csv")
    files["runs_csv"] = write_runs_csv(comp, out / "runs.csv")
    if marl_eval:
        files["marl_eval"] = write_marl_eval(comp, out / "marl_eval.json")
    return files


# --- across tasks (--aggregate, marl.report.across_tasks) ------------------------------------------

def write_across_tasks(result: AcrossTasks, out: Path) -> dict[str, Path]:
    """The across-task files: ``aggregate.csv`` (one row per algorithm: every aggregate with its CI),
    ``improvement.csv`` (one row per pair), ``normalised_runs.csv`` (one row per run and task: its final
    score, the task's bounds and their sources, its normalised score, whether the task is in the
    aggregate), ``aggregate_curves.csv`` and the plots."""
    from marl.report.across_tasks import AGGREGATES

    files: dict[str, Path] = {}
    with open(out / "normalised_runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "algorithm", "seed", "final", "low", "low_source", "high", "high_source", "normalised",
                    "in_aggregate", "excluded_because"])
        for task in result.tasks:
            b = task.bounds
            for algo, row in task.rows.items():
                for i, run in enumerate(row.runs):
                    norm = task.normalised.get(algo)
                    w.writerow([task.label, algo, run.seed, task.final[algo][i], *(("", "", "", "") if b is None else
                                (b.low, b.low_source, b.high, b.high_source)), "" if norm is None else norm[i],
                                task.excluded is None, task.excluded or ""])
            if not task.rows:
                w.writerow([task.label, "", "", "", "", "", "", "", "", False, task.excluded or ""])
    files["normalised_runs_csv"] = out / "normalised_runs.csv"
    if not result.aggregates:
        return files
    with open(out / "aggregate.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["algorithm", "runs_per_task", "tasks"] + [f"{a}{x}" for a in AGGREGATES
                                                               for x in ("", "_ci_low", "_ci_high")] + ["settings"])
        for algo in result.algorithms:
            e = result.aggregates[algo.label]
            w.writerow([algo.label, result.runs_per_task[algo.label], " ".join(t.label for t in result.included)]
                       + [v for a in AGGREGATES for v in (e[a].value, e[a].low, e[a].high)] + [algo.settings])
    files["aggregate_csv"] = out / "aggregate.csv"
    with open(out / "improvement.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["x", "y", "probability_x_above_y", "ci_low", "ci_high"])
        w.writerows([x, y, e.value, e.low, e.high] for x, y, e in result.improvement)
    files["improvement_csv"] = out / "improvement.csv"
    files["aggregate_intervals"] = plot_aggregates(result.aggregates, out / "aggregate_intervals.png")
    files["performance_profiles"] = plot_profiles(result.taus, result.profiles, out / "performance_profiles.png")
    if result.improvement:
        files["probability_of_improvement"] = plot_improvement(result.improvement,
                                                               out / "probability_of_improvement.png")
    if result.curves:
        with open(out / "aggregate_curves.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["algorithm", "env_steps", "iqm", "ci_low", "ci_high", "runs_per_task"])
            for algo, c in result.curves.items():
                w.writerows([algo, int(s), v, lo, hi, int(n)] for s, v, lo, hi, n in zip(c.steps, c.iqm, c.low, c.high,
                                                                                           c.runs))
        files["aggregate_curves_csv"] = out / "aggregate_curves.csv"
        title = f"Across {len(result.included)} tasks: {', '.join(t.label for t in result.included)}"
        files["aggregate_curves"] = plot_curves(result.curves, title, out / "aggregate_curves.png",
                                                "normalised score")
    return files
