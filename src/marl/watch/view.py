"""The terminal view of :mod:`marl.watch.state`, drawn with rich: a table per sweep (one progress bar
per run) and a sweep bar; :func:`watch` refreshes it in place (rich's ``Live``) or prints it once.

:class:`BackgroundView` runs the same live view in a thread of the launching process of a local
``launch.py -m`` (started and stopped by :class:`marl.callbacks.SweepSummary`).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import IO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from marl.watch.state import STALL_AFTER_S, RunState, SweepState, Watcher

STYLES = {"queued": "dim", "running": "cyan", "stalled": "yellow", "preempted": "magenta", "finished": "green",
          "failed": "bold red"}
UNIT_SHORT = {"env_steps": "steps", "episodes": "ep", "grad_steps": "updates"}
BAR_WIDTH = 20
ORDER = ("finished", "failed", "running", "stalled", "preempted", "queued")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "-"
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{h}:{m:02d}:{s:02d}"


def fmt_count(value: float | None) -> str:
    if value is None:
        return "?"
    value = float(value)
    for div, suffix, above in ((1e9, "G", 1e9), (1e6, "M", 1e6), (1e3, "k", 1e4)):  # exact below 10000
        if abs(value) >= above:
            text = f"{value / div:.3g}"
            return (text if "e" not in text else f"{value / div:.0f}") + suffix
    return f"{value:.0f}"


def fmt_value(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _bar(run: RunState) -> RenderableType:
    if run.status == "queued" or not run.total:
        return Text("")
    style = STYLES.get(run.status, "cyan").replace("dim", "white")
    return ProgressBar(total=run.total, completed=min(run.done, run.total), width=BAR_WIDTH, complete_style=style,
                       finished_style=style)


PRIORITY = ("running", "stalled", "preempted", "failed", "queued", "finished")  # rows kept when space is short


def visible_runs(sweep: SweepState, max_rows: int | None) -> tuple[list[RunState], str]:
    """The runs to draw (at most ``max_rows``, the active ones first, in sweep order) and a line for the rest."""
    if max_rows is None or len(sweep.runs) <= max_rows:
        return sweep.runs, ""
    rank = sorted(range(len(sweep.runs)), key=lambda i: (PRIORITY.index(sweep.runs[i].status), i))
    keep = sorted(rank[: max(max_rows - 1, 1)])
    hidden = [sweep.runs[i] for i in rank[max(max_rows - 1, 1):]]
    counts = ", ".join(f"{sum(r.status == s for r in hidden)} {s}" for s in ORDER if any(r.status == s for r in hidden))
    return [sweep.runs[i] for i in keep], f"... and {len(hidden)} more runs ({counts})"


def run_table(sweep: SweepState, width: int = 160, max_rows: int | None = None) -> Table:
    """The table of a sweep's runs, fitted to ``width`` columns: the note column takes what is left,
    and is left out below 12 (the failed runs' reasons are listed under the table anyway)."""
    runs, rest = visible_runs(sweep, max_rows)
    rows = []
    for run in runs:
        unit = UNIT_SHORT.get(run.unit, run.unit)
        done = "" if run.path is None else \
            f"{fmt_count(run.done)}/{fmt_count(run.total)} {unit} {100 * run.fraction:3.0f}%"
        active = run.status in ("running", "stalled")
        rows.append([
            run.name + (f" [{run.job_id}]" if run.job_id else ""),
            run.status,
            done,
            fmt_count(run.steps_per_sec) if active and run.steps_per_sec else "-",
            fmt_duration(run.eta_s) if run.status == "running" else "-",
            fmt_value(run.train_return),
            fmt_value(run.eval_return),
            run.reason.splitlines()[0] if run.reason else "",
        ])
    headers = ["run", "status", "done", "steps/s", "ETA", "train", "eval", "note"]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    widths[0] = min(widths[0], 40)
    base = sum(widths[1:7]) + BAR_WIDTH  # the columns but the name and the note
    note = width - (widths[0] + base + 2 * 8)  # what is left for the note (2: the gap between two columns)
    if note < 12 or not any(r[7] for r in rows):  # too narrow: the note goes, then the name gives way
        note = 0
        widths[0] = max(12, min(widths[0], width - base - 2 * 7))
    table = Table(title=str(sweep.root), title_justify="left", expand=False, pad_edge=False, box=None,
                  header_style="bold", padding=(0, 1), collapse_padding=False)
    table.add_column("run", no_wrap=True, overflow="ellipsis", width=widths[0])
    table.add_column("status", no_wrap=True, width=widths[1])
    table.add_column("progress", no_wrap=True, width=BAR_WIDTH)
    for i, header in enumerate(headers[2:7], start=2):
        table.add_column(header, justify="right", no_wrap=True, width=widths[i])
    if note:
        table.add_column("note", no_wrap=True, overflow="ellipsis", max_width=note)
    for run, row in zip(runs, rows):
        cells: list[RenderableType] = [row[0], Text(row[1], style=STYLES.get(run.status, "")), _bar(run), *row[2:7]]
        if len(table.columns) == 9:
            cells.append(Text(row[7], style="red" if run.status == "failed" else ""))
        table.add_row(*cells)
    if rest:
        table.caption, table.caption_justify, table.caption_style = rest, "left", "dim"
    return table


def sweep_line(sweep: SweepState) -> Table:
    n = len(sweep.runs)
    ended = sum(r.ended for r in sweep.runs)
    counts = [f"{sweep.count(s)} {s}" for s in ORDER if sweep.count(s)]
    grid = Table.grid(padding=(0, 1))
    grid.add_row(
        Text("sweep", style="bold"),
        ProgressBar(total=max(n, 1), completed=sweep.fraction * n, width=BAR_WIDTH, complete_style="cyan",
                    finished_style="green"),
        Text(f"{ended}/{n} runs ended" + (": " + ", ".join(counts) if counts else "")),
        Text(f"{fmt_count(sweep.steps_per_sec)} steps/s" if sweep.steps_per_sec else ""),
        Text("done" if sweep.ended else f"ETA {fmt_duration(sweep.eta_s)}", style="bold"),
    )
    return grid


def _listed(lines: list[tuple[str, str]], what: str, style: str, width: int, limit: int | None) -> list[Text]:
    out = []
    for name, text in lines[:limit]:
        text = " ".join(text.split())
        text = text if len(text) <= width else text[: width - 3] + "..."
        out.append(Text(f"  {name}: {text}", style=style))
    if limit is not None and len(lines) > limit:
        out.append(Text(f"  ... and {len(lines) - limit} more {what}", style=style))
    return out


def failures(sweep: SweepState, width: int = 300, limit: int | None = None) -> list[Text]:
    failed = [(run.name, run.reason) for run in sweep.runs if run.status == "failed" and run.reason]
    return _listed(failed, "failed runs", "red", width, limit)


def value_warnings(sweep: SweepState, width: int = 300, limit: int | None = None) -> list[Text]:
    """Runs whose learned value left its bound (marl.value_guard), whatever their status."""
    warned = [(run.name, run.warning) for run in sweep.runs if run.warning]
    return _listed(warned, "runs out of bounds", "yellow", width, limit)


def render(sweeps: list[SweepState], height: int | None = None, width: int = 160) -> RenderableType:
    """The view of ``sweeps`` in ``width`` columns; with ``height`` (a live terminal's lines), cut to fit it."""
    parts: list[RenderableType] = []
    n = max(len(sweeps), 1)
    max_rows = max(3, (height - 11 * n) // n) if height else None
    for sweep in sweeps:
        if not sweep.runs:
            parts.append(Text(f"{sweep.root}: no runs yet (waiting for the sweep to start)", style="dim"))
            continue
        parts.append(run_table(sweep, width=width, max_rows=max_rows))
        fails = (failures(sweep, width=300) if height is None
                 else failures(sweep, width=max(width - 4, 40), limit=5))
        if fails:
            parts.append(Text("failed:", style="bold red"))
            parts.extend(fails)
        warned = (value_warnings(sweep, width=300) if height is None
                  else value_warnings(sweep, width=max(width - 4, 40), limit=5))
        if warned:
            parts.append(Text("value out of bounds:", style="bold yellow"))
            parts.extend(warned)
        parts.append(sweep_line(sweep))
        parts.append(Text(""))
    if parts and isinstance(parts[-1], Text) and not parts[-1].plain:
        parts.pop()
    return Group(*parts)


def all_ended(sweeps: list[SweepState]) -> bool:
    return bool(sweeps) and all(s.ended for s in sweeps)


def watch(paths: list[Path], once: bool = False, interval: float = 2.0, stall_after: float = STALL_AFTER_S,
          console: Console | None = None, stop: threading.Event | None = None) -> list[SweepState]:
    """Print the view once, or keep it live until every run has ended (or ``stop`` is set).

    Returns the last scan.
    """
    console = console or Console(stderr=False)
    watcher = Watcher(paths, stall_after=stall_after)
    sweeps = watcher.scan()
    if once:
        console.print(render(sweeps, width=console.width))
        return sweeps
    stop = stop or threading.Event()
    with Live(render(sweeps, console.height, console.width), console=console, auto_refresh=False,
              transient=False) as live:
        while not all_ended(sweeps) and not stop.wait(interval):
            sweeps = watcher.scan()
            live.update(render(sweeps, console.height, console.width), refresh=True)
        sweeps = watcher.scan()
        live.update(render(sweeps, console.height, console.width), refresh=True)
    return sweeps


class BackgroundView:
    """The live view of ``sweep_dir`` in a thread, drawn on ``stream`` (the launching terminal).

    Started in the calling thread (so that output printed from then on, such as Hydra's launch lines,
    goes above the view rather than through it); :meth:`stop` draws the final state and leaves it on
    the screen.
    """

    def __init__(self, sweep_dir: Path, stream: IO[str] | None = None, interval: float = 1.0,
                 stall_after: float = STALL_AFTER_S) -> None:
        self.console = Console(file=stream or sys.stderr)
        self.watcher = Watcher([sweep_dir], stall_after=stall_after)
        self.interval = interval
        self.event = threading.Event()
        self.live = Live(Text(f"{sweep_dir}: starting the sweep...", style="dim"), console=self.console,
                         auto_refresh=False, transient=False, redirect_stdout=True, redirect_stderr=True)
        self.thread = threading.Thread(target=self._loop, name="marl-watch", daemon=True)
        self.sweeps: list[SweepState] = []

    def start(self) -> None:
        self.live.start(refresh=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.event.wait(self.interval):
            try:
                self.sweeps = self.watcher.scan()
                self.live.update(render(self.sweeps, self.console.height, self.console.width), refresh=True)
            except Exception as exc:  # the view must never stop the sweep
                self.live.update(Text(f"(the live view failed: {type(exc).__name__}: {exc})"), refresh=True)
                return

    def stop(self) -> list[SweepState]:
        self.event.set()
        self.thread.join(timeout=30)
        try:
            self.sweeps = self.watcher.scan()
            self.live.update(render(self.sweeps, self.console.height, self.console.width), refresh=True)
        finally:
            self.live.stop()
        return self.sweeps

