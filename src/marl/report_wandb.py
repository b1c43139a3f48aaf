"""Publish a comparison as a W&B Report (``python -m marl.report ... --wandb``), via ``wandb-workspaces``.

The report holds the markdown tables of :mod:`marl.report` and, per env, a panel of the runs of
the compared W&B groups, grouped by ``config.mixer.name``, plotting ``eval/return_mean`` against
``env_steps``. It needs W&B online (an API key and network) and runs that are uploaded: offline
runs are listed with the ``wandb sync`` command that uploads them, and nothing is published.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from marl.logger import wandb_mode
from marl.report import Comparison, to_markdown

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


def build_report(comp: Comparison, entity: str, project: str, title: str) -> Any:
    """The ``wandb_workspaces`` Report object (not saved). Building it needs no network."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    blocks: list[Any] = [wr.MarkdownBlock(to_markdown(comp))]
    for table in comp.tables:
        groups = sorted({row.wandb_group for row in table.rows})
        runset = wr.Runset(entity=entity, project=project, name=table.label,
                           filters=[expr.Metric("Group").isin(groups)], groupby=[GROUP_BY])
        plot = wr.LinePlot(title=f"{table.label}: {comp.metric}", x="env_steps", y=[comp.metric],
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
