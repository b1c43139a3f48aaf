"""Hydra callbacks. :class:`SweepSummary` prepares a ``launch.py -m`` sweep and ends it with where the
sweep is and what to run next.

Registered in ``conf/config.yaml`` under ``hydra.callbacks``; Hydra calls ``on_multirun_start`` and
``on_multirun_end`` in the launching process, before the first job and once every job of the sweep
has returned (locally, or with the SLURM launcher).
Kept free of heavy imports: Hydra instantiates callbacks in every job process too.

A local sweep launched on a terminal (stderr a TTY, not ``hydra/launcher=slurm``, and
``MARL_LIVE_VIEW`` not ``0``) shows the live view of :mod:`marl.watch` instead of the interleaved
lines of its parallel runs: :class:`SweepSummary` draws it from a thread of the launching process
and sets ``MARL_JOB_CONSOLE_LOG`` for the jobs, which then print into ``<run_dir>/console.log``
(:func:`job_console`, used by launch.py). Piped, or on SLURM, the runs print as before.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

LIVE_VIEW_ENV = "MARL_LIVE_VIEW"          # "0": a local sweep on a terminal prints the per-run lines instead
JOB_CONSOLE_ENV = "MARL_JOB_CONSOLE_LOG"  # set for the jobs while the live view owns the terminal
CONSOLE_LOG = "console.log"               # a job's printed lines then, in its run folder


def live_view_wanted(config: DictConfig) -> bool:
    """A local sweep (any launcher but submitit's) whose launching terminal is a TTY, not opted out."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
    return "submitit" not in target and sys.stderr.isatty() and os.environ.get(LIVE_VIEW_ENV, "1") != "0"


@contextlib.contextmanager
def job_console(run_dir: Path) -> Iterator[None]:
    """Around one job of a sweep drawn by the live view: what it prints goes to ``<run_dir>/console.log``.

    Everything the run writes to ``sys.stdout``/``sys.stderr`` (the progress lines of its
    ``ConsoleSink``, resume and W&B notes, a failure's message), not only the progress lines, so
    that nothing of a job draws through the view. Without ``MARL_JOB_CONSOLE_LOG`` it does nothing.
    """
    if not os.environ.get(JOB_CONSOLE_ENV):
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / CONSOLE_LOG, "a", encoding="utf-8", buffering=1) as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        yield


def run_counts(sweep_dir: Path) -> tuple[str, list[tuple[Path, str]]]:
    """``"6 run(s): 5 finished, 1 failed"`` for the sweep (as :mod:`marl.watch` sees it, whose jobs and
    folders match as :mod:`marl.report`'s do), and its failed runs with their reason (the viewer also
    calls a run failed whose process or SLURM job ended without a final record or a checkpoint)."""
    from marl.watch.state import Watcher

    runs = [r for sweep in Watcher([sweep_dir]).scan() for r in sweep.runs]
    order = ("finished", "failed", "preempted", "running", "stalled", "queued")
    counts = [f"{sum(r.status == s for r in runs)} {s}" for s in order
              if s in ("finished", "failed") or any(r.status == s for r in runs)]
    others = [(r.path, r.reason) for r in runs if r.status == "failed" and r.path is not None]
    return f"{len(runs)} run(s): " + ", ".join(counts), others


def sweep_summary(sweep_dir: Path) -> str:
    """The lines printed at the end of a sweep: its folder, the report command, the W&B sync command."""
    sweep_dir = sweep_dir.resolve()
    lines = ["", f"Sweep folder: {sweep_dir}"]
    failed = failed_runs(sweep_dir)
    try:
        counts, others = run_counts(sweep_dir)
        lines.append(counts)
        known = {path for path, _ in failed}
        failed += [(path, reason if len(reason) <= 160 else reason[:157] + "...") for path, reason in others
                   if path not in known]
    except Exception as exc:  # the count must never hide the folder and the report command
        lines.append(f"(could not count the runs: {type(exc).__name__}: {exc})")
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
    """Run folders under ``sweep_dir`` that failed (:func:`marl.run_folder.status`), with a short reason."""
    from marl import run_folder

    out = []
    for run_dir in run_folder.discover(sweep_dir)[1]:
        status = run_folder.status(run_dir)
        if status.state == run_folder.FAILED:
            out.append((run_dir, status.reason if len(status.reason) <= 160 else status.reason[:157] + "..."))
    return out


# The live view of this process's sweep. Not an attribute of the callback: the joblib launcher pickles
# the callbacks (in Hydra's context) to send every job to its worker, and a thread cannot be pickled.
_LIVE: list[Any] = []


def stop_live_view() -> None:
    """Draw the live view's final frame, leave it on the screen and stop it (if one is running)."""
    os.environ.pop(JOB_CONSOLE_ENV, None)
    while _LIVE:
        try:
            _LIVE.pop().stop()
        except Exception:
            pass


class SweepSummary(Callback):
    """Builds the fused CPU GRU before the jobs start; shows the live view of a local sweep on a terminal;
    prints :func:`sweep_summary` at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Once here rather than in every parallel job (each would compile it, ~30 s, at the same time).
        if config.agent.name == "rnn" and not str(config.device).startswith("cuda"):
            from marl.agents import gru_sequence

            gru_sequence.available()
        if live_view_wanted(config):
            try:
                from marl.watch.view import BackgroundView

                view = BackgroundView(Path(str(config.hydra.sweep.dir)))
                view.start()
            except Exception as exc:  # no view: the runs print their lines as before
                print(f"(no live view: {type(exc).__name__}: {exc})", file=sys.stderr, flush=True)
                return
            _LIVE.append(view)
            os.environ[JOB_CONSOLE_ENV] = "1"  # read by the jobs (joblib's workers inherit it)
            atexit.register(stop_live_view)  # a sweep that ends on an error: leave the terminal usable

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        stop_live_view()  # its last frame stays on the screen, above the summary
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            print(sweep_summary(sweep_dir), flush=True)
        except Exception as exc:  # a summary must never turn a finished sweep into a failure
            print(f"(could not summarise the sweep: {exc})", flush=True)
        if failed_runs(sweep_dir):
            sys.exit(1)  # every run was tried; the sweep as a whole did not succeed
