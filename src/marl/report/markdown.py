"""The comparison as markdown: a table per env, then the runs that are unfinished or missing.

The same text is printed by ``python -m marl.report``, written to ``report.md`` and put at the top
of the W&B Report (:mod:`marl.report.publish`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from marl.report.model import Comparison, EnvTable, Estimate, Row
from marl.report.runs import describe

if TYPE_CHECKING:
    from marl.report.across_tasks import AcrossTasks


def fmt(x: float) -> str:
    if not np.isfinite(x):
        return "nan"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def fmt_estimate(e: Estimate | None) -> str:
    return "—" if e is None else f"{fmt(e.value)} [{fmt(e.low)}, {fmt(e.high)}]"


def steps_label(row: Row) -> str:
    """The env steps the row's runs reached: one number, or the range when they differ."""
    steps = row.env_steps
    if not steps:
        return "—"
    return f"{min(steps)}" if min(steps) == max(steps) else f"{min(steps)}–{max(steps)}"


def wall_label(row: Row) -> str:
    """Wall time per run in minutes: the median over the row's runs and their range."""
    walls = sorted(w / 60 for w in row.wall_s)
    if not walls:
        return "—"
    if len(walls) == 1:
        return f"{walls[0]:.1f}"
    return f"{float(np.median(walls)):.1f} ({walls[0]:.1f}–{walls[-1]:.1f})"


def per_agent_note(table: EnvTable) -> str:
    """How the table's returns are scaled under ``--per-agent`` ("" for team returns)."""
    if table.divisor is None:
        return ""
    if table.divisor == 1:
        return "returns per agent: the team reward is already every agent's reward, not divided"
    return f"returns per agent: team returns divided by {table.divisor:g} agents"


def maximum_step_label(row: Row) -> str:
    """The env step of the row's maximum return, and how many seeds it is over when not all of them."""
    if row.maximum_step is None:
        return "—"
    n = len(row.maximum_scores)
    return f"{row.maximum_step}" + (f" ({n} of {len(row.runs)} seeds)" if n != len(row.runs) else "")


def to_markdown(comp: Comparison, images: dict[str, str] | None = None) -> str:
    """The report as markdown: a table per env, then the runs that are missing or unfinished."""
    intro = (f"`{comp.metric}` over seeds: mean and interquartile mean (IQM) with 95% stratified-bootstrap "
             "confidence intervals (rliable). *final*: the last evaluation of each run; *best*: its best "
             "evaluation. Rows are sorted by final IQM. EPyMARL's metrics, mean over seeds: *maximum*: at the "
             "evaluation step where the mean over seeds is highest (*maximum at*); *average*: each run's mean "
             "over all its evaluations. *wall time*: minutes per run, median over the seeds (fastest–slowest), summed "
             "over a run's attempts when it was resumed.")
    if comp.per_agent:
        intro += (" **Per agent** (`--per-agent`): each run's values are divided by its number of agents where "
                  "its team reward is the sum of the agents' rewards.")
    out = [f"# Comparison of {sum(len(t.rows) for t in comp.tables)} experiments", "", intro, ""]
    for table in comp.tables:
        note = per_agent_note(table)
        out += [f"## {table.label}" + (f" ({note})" if note else ""), "",
                "| experiment | seeds | env steps | final mean [95% CI] | final IQM [95% CI] "
                "| best mean [95% CI] | best IQM [95% CI] | maximum mean [95% CI] | maximum at (env steps) "
                "| average mean [95% CI] | wall time per run (min) |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in table.rows:
            label = row.label + (" (in progress)" if row.in_progress else "")
            out.append(f"| {label} | {len(row.runs)} | {steps_label(row)} | {fmt_estimate(row.final.get('mean'))} "
                       f"| {fmt_estimate(row.final.get('iqm'))} | {fmt_estimate(row.best.get('mean'))} "
                       f"| {fmt_estimate(row.best.get('iqm'))} | {fmt_estimate(row.maximum.get('mean'))} "
                       f"| {maximum_step_label(row)} | {fmt_estimate(row.average.get('mean'))} | {wall_label(row)} |")
        out.append("")
        if images and table.slug in images:
            out += [f"![{table.label}]({images[table.slug]})", ""]
    if comp.incomplete:
        out += ["## Unfinished or failed runs", "",
                "Failed runs are never in the numbers; unfinished ones only when their group has no finished run:",
                ""]
        out += [f"- {describe(r)}: {r.problem}" for r in comp.incomplete] + [""]
    warned = [r for t in comp.tables for row in t.rows for r in row.runs if r.warning]
    warned += [r for r in comp.incomplete if r.warning and r not in warned]
    if warned:
        out += ["## Runs whose learned value left its bound", "",
                "A value no sound learner reaches ([min r, max r]/(1-γ), docs/faults.md): these runs diverged "
                "while staying finite, and their numbers above are not to be trusted:", ""]
        out += [f"- {describe(r)}: {r.warning}" for r in warned] + [""]
    if comp.missing:
        out += ["## Missing runs", ""] + [f"- {m}" for m in comp.missing] + [""]
    return "\n".join(out)


# --- across tasks (--aggregate, marl.report.across_tasks) ------------------------------------------

def across_tasks_markdown(result: AcrossTasks, metric: str, images: dict[str, str] | None = None) -> str:
    """The across-task part of report.md: normalisation, aggregates, probability of improvement,
    performance profiles, the curve over training, and every task or run left out and why."""
    from marl.report.across_tasks import PROFILE_TABLE_TAUS

    images = images or {}
    algos = [a.label for a in result.algorithms]
    included = result.included
    out = ["# Across tasks", "",
           f"Each run's final `{metric}` normalised per task: (final − low) / (high − low), *low* the return of a "
           "uniform-random policy on the task (measured by the report, or `--bounds`), *high* the best evaluation "
           "that any compared run reached on it (or `--bounds`). 0 is random, 1 the best run; below 0 is worse "
           "than random. Aggregates are over all runs of all tasks in the aggregate, with 95% stratified-bootstrap "
           "confidence intervals (rliable; runs resampled within each task). docs/report.md says what each "
           "number means and what it cannot say with few tasks or seeds.", ""]
    tasks_line = ", ".join(t.label for t in included) or "none"
    runs_line = ", ".join(f"{a} {n}" for a, n in result.runs_per_task.items())
    out += [f"Tasks in the aggregate ({len(included)}): {tasks_line}." + (f" Runs per task: {runs_line}." if runs_line
                                                                            else ""), ""]
    out += ["## Normalisation", "",
            "Per task: the bounds and each algorithm's normalised final score, mean over its runs.", "",
            "| task | low | high | " + " | ".join(algos) + " | in the aggregate |",
            "|---|---|---|" + "---|" * len(algos) + "---|"]
    for task in result.tasks:
        b = task.bounds
        low = "—" if b is None else f"{fmt(b.low)} ({b.low_source})"
        high = "—" if b is None else f"{fmt(b.high)} ({b.high_source})"
        cells = [fmt(float(np.mean(task.normalised[a]))) if a in task.normalised else "—" for a in algos]
        out.append(f"| {task.label} | {low} | {high} | " + " | ".join(cells)
                   + f" | {'yes' if task.excluded is None else 'no (below)'} |")
    out.append("")
    if result.aggregates:
        order = sorted(result.aggregates, key=lambda a: -result.aggregates[a]["iqm"].value)
        out += ["## Aggregate normalised final score", "",
                "| algorithm | runs × tasks | IQM [95% CI] | mean [95% CI] | median [95% CI] "
                "| optimality gap [95% CI] |", "|---|---|---|---|---|---|"]
        for a in order:
            e = result.aggregates[a]
            out.append(f"| {a} | {result.runs_per_task[a]} × {len(included)} | {fmt_estimate(e['iqm'])} "
                       f"| {fmt_estimate(e['mean'])} | {fmt_estimate(e['median'])} "
                       f"| {fmt_estimate(e['optimality_gap'])} |")
        out.append("")
        if "aggregate_intervals" in images:
            out += [f"![aggregate scores]({images['aggregate_intervals']})", ""]
    if result.improvement:
        out += ["## Probability of improvement", "",
                "P(X > Y): the probability that a run of X on a task, drawn at random, scores above a run of Y on "
                "the same task (ties count half), averaged over the tasks.", "",
                "| X | Y | P(X > Y) [95% CI] |", "|---|---|---|"]
        out += [f"| {x} | {y} | {fmt_estimate(e)} |" for x, y, e in result.improvement] + [""]
        if "probability_of_improvement" in images:
            out += [f"![probability of improvement]({images['probability_of_improvement']})", ""]
    elif result.aggregates:
        out += ["## Probability of improvement", "", "Needs two algorithms; one is compared.", ""]
    if result.profiles:
        idx = [int(np.argmin(np.abs(result.taus - t))) for t in PROFILE_TABLE_TAUS]
        out += ["## Performance profiles", "",
                "The fraction of runs (over all tasks in the aggregate) whose normalised final score is above τ.", "",
                "| algorithm | " + " | ".join(f"τ = {t:g}" for t in PROFILE_TABLE_TAUS) + " |",
                "|---|" + "---|" * len(idx)]
        for a, (value, low, high) in result.profiles.items():
            out.append(f"| {a} | " + " | ".join(fmt_estimate(Estimate(float(value[i]), float(low[i]), float(high[i])))
                                                for i in idx) + " |")
        out.append("")
        if "performance_profiles" in images:
            out += [f"![performance profiles]({images['performance_profiles']})", ""]
    if result.curves:
        steps = int(next(iter(result.curves.values())).steps[-1])
        out += ["## Over training", "",
                "Aggregate IQM of the normalised evaluations against env steps (each run's evaluations "
                "interpolated onto the evaluation steps that every run of every task reached), up to "
                f"{steps} env steps.", ""]
        if "aggregate_curves" in images:
            out += [f"![aggregate IQM over training]({images['aggregate_curves']})", ""]
    left_out = [t for t in result.tasks if t.excluded is not None]
    if left_out or result.notes:
        out += ["## Left out, and what to know", ""]
        out += [f"- task {t.label}: not in the aggregate: {t.excluded}" for t in left_out]
        out += [f"- {note}" for note in result.notes] + [""]
    out += ["## Algorithms", "", "Matched across tasks by these settings (what separates the experiments of a task):",
            ""]
    out += [f"- {a.label}: {a.settings or 'no other setting differs'}" for a in result.algorithms] + [""]
    return "\n".join(out)
