"""Publish a comparison as a W&B Report (``python -m marl.report ... --wandb``), via ``wandb-workspaces``.

The report holds the markdown tables of :mod:`marl.report.markdown` (final, best, maximum and average
return, per agent with ``--per-agent``) and, per env, a panel of the compared
runs (selected by their W&B run ids, from ``wandb_id.txt`` in each run folder), grouped by
``config.mixer.name``, plotting ``eval/return_mean`` against ``env_steps``. (Selecting by group
name would be as good, but wandb-workspaces 0.4 turns a ``=`` inside a filter's string value into
``==``, and group names hold ``key=value`` overrides.) It needs W&B online (an API key and network) and runs that are uploaded: offline
runs are listed with the ``wandb sync`` command that uploads them, and nothing is published.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from marl.logger import WANDB_ID_FILE, wandb_mode
from marl.report.markdown import to_markdown
from marl.report.model import Comparison

GROUP_BY = "config.mixer.name"


def unsynced_offline_runs(comp: Comparison) -> list[Path]:
    """The offline W&B run folders of the compared runs that ``wandb sync`` has not uploaded."""
    found = []
    for table in comp.tables:
        for row in table.rows:
            for run in row.runs:
                for d in sorted((run.path / "wandb").glob("offline-run-*")):
                    if not any(d.glob("*.wandb.synced")):
                        found.append(d)
    return found


def wandb_run_id(run_dir: Path) -> str | None:
    """The W&B run id that the run in ``run_dir`` logged to (None if it did not use W&B)."""
    path = run_dir / WANDB_ID_FILE
    return path.read_text().strip() if path.is_file() else None


def build_report(comp: Comparison, entity: str, project: str, title: str) -> Any:
    """The ``wandb_workspaces`` Report object (not saved). Building it needs no network."""
    import wandb_workspaces.reports.v2 as wr

    blocks: list[Any] = [wr.MarkdownBlock(to_markdown(comp))]
    for table in comp.tables:
        ids = sorted(run_id for row in table.rows for run in row.runs if (run_id := wandb_run_id(run.path)))
        runset = wr.Runset(entity=entity, project=project, name=table.label,
                           filters=f"Metric('ID') in {ids!r}", groupby=[GROUP_BY])
        # the panel plots what the runs logged: team returns even where the tables are --per-agent
        note = " (team return; the tables above are per agent)" if table.divisor not in (None, 1) else ""
        plot = wr.LinePlot(title=f"{table.label}: {comp.metric}{note}", x="env_steps", y=[comp.metric],
                           groupby_aggfunc="mean", groupby_rangefunc="stderr")
        blocks += [wr.H2(table.label), wr.PanelGrid(runsets=[runset], panels=[plot])]
    return wr.Report(entity=entity, project=project, title=title[:128],
                     description="Mixers compared across seeds by marl.report", blocks=blocks)


def publish(comp: Comparison, title: str | None = None) -> str | None:
    """Save the report to W&B and return its URL; print why not and return None when offline."""
    if wandb_mode("auto") != "online":
        print("--wandb: W&B is not reachable here (no API key, WANDB_MODE=offline, or no network), so no "
              "W&B Report was published. Upload the runs with `wandb sync`, then rerun with --wandb where "
              "W&B is online.", file=sys.stderr)
        return None
    offline = unsynced_offline_runs(comp)
    if offline:
        print(f"--wandb: {len(offline)} runs were logged offline and are not uploaded yet, so the report "
              "would not show them. Upload them first:\n  wandb sync " + " ".join(map(str, offline)),
              file=sys.stderr)
        return None
    targets = {}
    for table in comp.tables:
        for row in table.rows:
            wb = (row.runs[0].config or {}).get("logger", {}).get("wandb", {})
            targets.setdefault((wb.get("entity"), wb.get("project") or "marl"), []).append(table.label)
    urls = []
    try:
        import wandb

        for (entity, project) in targets:
            entity = entity or wandb.Api().default_entity
            names = ", ".join(t.label for t in comp.tables)
            report = build_report(comp, entity, project, title or f"marl: mixers compared on {names}").save()
            urls.append(report.url)
            print(f"W&B Report: {report.url}")
    except Exception as exc:  # a report is a convenience; the local one is already written
        print(f"--wandb: publishing the W&B Report failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    return urls[0] if urls else None
