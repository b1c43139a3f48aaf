"""Hydra callbacks. :class:`SweepSummary` prepares a ``launch.py -m`` sweep and ends it with where the
sweep is and what to run next.

Registered in ``conf/config.yaml`` under ``hydra.callbacks``; Hydra calls ``on_multirun_start`` and
``on_multirun_end`` in the launching process, before the first job and once every job of the sweep
has returned (locally, or with the SLURM launcher).
Kept free of heavy imports: Hydra instantiates callbacks in every job process too.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def sweep_summary(sweep_dir: Path) -> str:
    """The lines printed at the end of a sweep: its folder, the report command, the W&B sync command."""
    sweep_dir = sweep_dir.resolve()
    lines = ["", f"Sweep folder: {sweep_dir}"]
    failed = failed_runs(sweep_dir)
    if failed:
        lines.append(f"{len(failed)} run(s) failed (the report lists them as failed, not as results):")
        lines += [f"  {path.relative_to(sweep_dir)}: {reason}" for path, reason in failed]
    lines.append(f"Compare the runs across seeds:  python -m marl.report {shlex.quote(str(sweep_dir))}")
    offline = sorted(sweep_dir.glob("**/wandb/offline-run-*"))
    if offline:
        rel = offline[0].relative_to(sweep_dir).parts
        pattern = "/".join(["*"] * (len(rel) - 2) + ["wandb", "offline-run-*"])
        lines.append(f"W&B runs were logged offline; upload them with:  wandb sync {shlex.quote(str(sweep_dir))}/{pattern}")
    return "\n".join(lines)


def failed_runs(sweep_dir: Path) -> list[tuple[Path, str]]:
    """Run folders under ``sweep_dir`` whose ``status.json`` says they failed, with a short reason."""
    out = []
    for status_file in sorted(sweep_dir.glob("**/status.json")):
        try:
            status = json.loads(status_file.read_text())
        except (OSError, ValueError):
            continue
        if status.get("status") == "failed":
            reason = f"{status.get('error', 'error')}: {status.get('reason', '')}"
            out.append((status_file.parent, reason if len(reason) <= 160 else reason[:157] + "..."))
    return out


class SweepSummary(Callback):
    """Builds the fused CPU GRU before the jobs start; prints :func:`sweep_summary` at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Once here rather than in every parallel job (each would compile it, ~30 s, at the same time).
        if config.agent.name == "rnn" and not str(config.device).startswith("cuda"):
            from marl.agents import gru_sequence

            gru_sequence.available()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            print(sweep_summary(sweep_dir), flush=True)
        except Exception as exc:  # a summary must never turn a finished sweep into a failure
            print(f"(could not summarise the sweep: {exc})", flush=True)
        if failed_runs(sweep_dir):
            sys.exit(1)  # every run was tried; the sweep as a whole did not succeed
