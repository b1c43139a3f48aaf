"""The comparison as markdown: a table per env, then the runs that are unfinished or missing.

The same text is printed by ``python -m marl.report``, written to ``report.md`` and put at the top
of the W&B Report (:mod:`marl.report.publish`).
"""

from __future__ import annotations

import numpy as np

from marl.report.model import Comparison, EnvTable, Estimate, Row
from marl.report.runs import describe


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
    if comp.missing:
        out += ["## Missing runs", ""] + [f"- {m}" for m in comp.missing] + [""]
    return "\n".join(out)
