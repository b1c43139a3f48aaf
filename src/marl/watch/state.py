"""What every run of a sweep is doing, read from the run folders alone (and SLURM's queue for SLURM sweeps).

A :class:`Watcher` scans one or more folders (a sweep folder, a run folder or any folder above
them) and returns one :class:`SweepState` per sweep, each with a :class:`RunState` per run. The
folders are what :mod:`marl.experiment` writes; the jobs a sweep launched come from its
``multirun.yaml``, matched to the folders by :func:`marl.run_folder.match_jobs` (as the report
does). A run's status refines :func:`marl.run_folder.status`; first match wins:

* ``failed``: its ``metrics.jsonl`` has a ``{"status": "failed"}`` record, or its ``status.json``
  says so (with the reason), or SLURM says its job ended badly and the folder never got a final
  record or checkpoint;
* ``finished``: ``metrics.jsonl`` has the ``{"final": 1.0}`` record;
* ``running``: a process holds the folder's ``run.lock`` (``flock``), or SLURM says its job runs;
  ``stalled`` instead when no record came for ``stall_after`` seconds (or three of its usual gaps);
* ``preempted``: no process, no final record, but a ``checkpoint.pt`` to resume from; under
  SLURM a requeued job (pending again) is waiting to resume it;
* ``queued``: in the sweep's ``multirun.yaml`` but no folder yet (SLURM: the job is pending).

Reading is incremental (only the bytes appended to ``metrics.jsonl`` since the last scan) and
never writes: the lock test first looks for the lock in ``/proc/locks``, skips a holder whose pid
has died on this host, and only otherwise takes a shared ``flock`` for an instant and releases it.
"""

from __future__ import annotations

import heapq
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from marl import run_folder
from marl.run_folder import (CHECKPOINT_FILE, CONFIG_FILE, LOCK_FILE, METRICS_FILE, MULTIRUN_FILE, MetricsTail,
                             expected_jobs, lock_held, overrides, proc_locks)
from marl.watch import slurm

STALL_AFTER_S = 300.0
ACTIVE = ("running", "stalled")
ENDED = ("finished", "failed")


@dataclass
class RunState:
    """One run as the view shows it. ``eta_s``: seconds until it ends (0 when finished, None unknown)."""

    name: str
    path: Path | None
    status: str
    reason: str = ""
    unit: str = "env_steps"
    done: float = 0.0
    total: float | None = None
    steps_per_sec: float | None = None   # env steps per second, the latest measured
    rate: float | None = None            # t_max units per second over the latest records
    eta_s: float | None = None
    elapsed_s: float = 0.0               # training seconds so far, over every attempt
    train_return: float | None = None
    eval_return: float | None = None
    last_record_age_s: float | None = None
    job_id: str | None = None            # SLURM job id (array_task)
    will_resume: bool = False            # preempted, and a requeued SLURM job will resume it
    warning: str = ""                    # its learned value left its bound (run_folder.value_warning)

    @property
    def fraction(self) -> float:
        if self.status == "finished":
            return 1.0
        if not self.total:
            return 0.0
        return max(0.0, min(self.done / self.total, 1.0))

    @property
    def ended(self) -> bool:
        """Nothing more will happen to it without a person: finished, failed, or preempted with no requeue."""
        return self.status in ENDED or (self.status == "preempted" and not self.will_resume)


@dataclass
class SweepState:
    root: Path
    runs: list[RunState] = field(default_factory=list)
    slurm: bool = False
    eta_s: float | None = None

    def count(self, *statuses: str) -> int:
        return sum(r.status in statuses for r in self.runs)

    @property
    def fraction(self) -> float:
        """Finished and failed runs count whole (they take no more time), the others by their progress."""
        if not self.runs:
            return 0.0
        return sum(1.0 if r.status in ENDED else r.fraction for r in self.runs) / len(self.runs)

    @property
    def ended(self) -> bool:
        return bool(self.runs) and all(r.ended for r in self.runs)

    @property
    def steps_per_sec(self) -> float:
        return sum(r.steps_per_sec or 0.0 for r in self.runs if r.status in ACTIVE)


# --- reading a folder -----------------------------------------------------------------------------

class _Folder:
    """What is cached of one run folder between scans: its config and its records."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tail = MetricsTail(path / METRICS_FILE)
        self.config_mtime: float | None = None
        self.t_max: float | None = None
        self.unit = "env_steps"
        self.overrides: list[str] | None = None
        self.hydra_mtime: float | None = None
        self.slurm_id: str | None = None

    def job_id(self) -> str | None:
        """The SLURM job id the newest job in this folder recorded (cached until .hydra/hydra.yaml changes)."""
        try:
            mtime = os.stat(self.path / ".hydra" / "hydra.yaml").st_mtime
        except OSError:
            return None
        if mtime != self.hydra_mtime:
            self.hydra_mtime, self.slurm_id = mtime, slurm.folder_job_id(self.path)
        return self.slurm_id

    def config(self) -> None:
        try:
            mtime = os.stat(self.path / CONFIG_FILE).st_mtime
        except OSError:
            return
        if mtime == self.config_mtime:
            return
        try:
            cfg = OmegaConf.load(self.path / CONFIG_FILE)
            self.t_max = float(cfg.get("t_max"))
            self.unit = str(cfg.get("t_max_unit", "env_steps")).split(".")[-1]
            self.config_mtime = mtime
        except Exception:
            pass


def _segments(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The records split per attempt: ``time`` restarts at each resume."""
    out: list[list[dict[str, Any]]] = []
    last = None
    for r in records:
        t = r.get("time")
        if not isinstance(t, (int, float)):
            continue
        if last is None or t < last:
            out.append([])
        out[-1].append(r)
        last = t
    return out


def _rate(segment: list[dict[str, Any]], key: str, window: int = 6) -> float | None:
    """``key`` per second over the last ``window`` records of one attempt."""
    points = [(r["time"], r[key]) for r in segment if isinstance(r.get(key), (int, float))][-window:]
    if len(points) < 2:
        return None
    (t0, d0), (t1, d1) = points[0], points[-1]
    return (d1 - d0) / (t1 - t0) if t1 > t0 and d1 > d0 else None


def fmt_age(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min" if seconds < 7200 else f"{seconds // 3600} h"


def run_state(folder: _Folder, name: str, now: float, stall_after: float, locks: set[str] | None,
              job: slurm.JobState | None = None) -> RunState:
    """The state of one run folder at time ``now`` (see the module docstring for the rules)."""
    path = folder.path
    folder.config()
    records = folder.tail.read()
    state = RunState(name=name, path=path, status="running", unit=folder.unit, total=folder.t_max,
                     job_id=job.job_id if job else None)
    steps = [r for r in records if isinstance(r.get(state.unit), (int, float))]
    if steps:
        state.done = float(steps[-1][state.unit])
    for r in reversed(records):
        if state.train_return is None and isinstance(r.get("train/return_mean"), (int, float)):
            state.train_return = float(r["train/return_mean"])
        if state.eval_return is None and isinstance(r.get("eval/return_mean"), (int, float)):
            state.eval_return = float(r["eval/return_mean"])
        if state.steps_per_sec is None and isinstance(r.get("steps_per_sec"), (int, float)):
            state.steps_per_sec = float(r["steps_per_sec"])
    segments = _segments(records)
    current = segments[-1] if segments else []
    state.elapsed_s = sum(float(s[-1]["time"]) for s in segments)
    state.rate = _rate(current, state.unit)
    if state.rate is None and state.steps_per_sec and steps and steps[-1].get("env_steps"):
        # One record of this attempt so far: its env steps/s, in t_max units (units per env step so far).
        state.rate = state.steps_per_sec * state.done / float(steps[-1]["env_steps"])
    if state.steps_per_sec is None:
        state.steps_per_sec = _rate(current, "env_steps")
    last_write = folder.tail.mtime
    if last_write is None or not records:
        try:  # no record yet: count from when the run took its folder
            last_write = os.stat(path / LOCK_FILE).st_mtime
        except OSError:
            last_write = os.stat(path).st_mtime if path.exists() else now
    state.last_record_age_s = max(now - last_write, 0.0)

    running = lock_held(path, locks) or (job is not None and job.active and job.running)
    decided = run_folder.status(path, records, running)
    state.warning = decided.warning
    if decided.state == run_folder.FAILED:
        state.status, state.reason = "failed", decided.reason
        return state
    if decided.state == run_folder.FINISHED:
        state.status, state.eta_s = "finished", 0.0
        if state.total:
            state.done = max(state.done, state.total)
        return state
    if decided.state == run_folder.RUNNING:
        gaps = [b["time"] - a["time"] for a, b in zip(current, current[1:]) if b["time"] > a["time"]]
        limit = max(stall_after, 3 * max(gaps[-3:])) if gaps else stall_after
        if state.last_record_age_s > limit:
            state.status = "stalled"
            state.reason = f"no new record for {fmt_age(state.last_record_age_s)}"
        else:
            state.status = "running"
            if not records:
                state.reason = "starting"
            if state.rate and state.total:
                state.eta_s = max((state.total - state.done) / state.rate - state.last_record_age_s, 0.0)
        return state

    has_checkpoint = (path / CHECKPOINT_FILE).is_file()
    if has_checkpoint:
        state.status = "preempted"
        state.reason = f"checkpoint at {int(state.done)} {state.unit}"
        if job is not None and job.active:
            state.will_resume = True
            state.reason += f"; SLURM job {job.job_id} requeued: {job.describe()}"
        elif job is not None and job.state:
            state.reason += f"; SLURM job {job.job_id} {job.describe()}: relaunch the sweep to resume it"
        else:
            state.reason += ": start it again in the same folder to resume"
        return state
    if job is not None and job.active:  # SLURM: requeued or about to start, no checkpoint yet
        state.status, state.reason = "queued", f"SLURM {job.describe()}"
        return state
    if state.last_record_age_s < stall_after and not records:
        state.reason = "starting"  # Hydra made the folder; the run has not taken it yet
        return state
    state.status = "failed"
    why = f"SLURM job {job.job_id} {job.describe()}" if job is not None and job.state else "its process is gone"
    state.reason = (f"{why} without a final record or a checkpoint" if records else
                    f"{why} before the first record (see its launch.log / console.log)")
    return state


# --- a sweep ------------------------------------------------------------------------------------

class Watcher:
    """Scans ``paths`` into :class:`SweepState` objects; keeps what it read between scans.

    ``stall_after``: seconds without a new record after which a live run is called stalled (at
    least three of its usual gaps between records). ``slurm_every``: seconds between two queries
    of squeue/sacct.
    """

    def __init__(self, paths: list[Path], stall_after: float = STALL_AFTER_S, slurm_every: float = 10.0) -> None:
        self.paths = [Path(p) for p in paths]
        self.stall_after = stall_after
        self.folders: dict[Path, _Folder] = {}
        self.jobs_cache: dict[Path, tuple[float, list[list[str]]]] = {}
        self.slurm = slurm.Queue(every=slurm_every)

    def _expected(self, sweep: Path) -> list[list[str]]:
        try:
            mtime = os.stat(sweep / MULTIRUN_FILE).st_mtime
        except OSError:
            return []
        cached = self.jobs_cache.get(sweep)
        if cached is None or cached[0] != mtime:
            cached = (mtime, expected_jobs(sweep))
            self.jobs_cache[sweep] = cached
        return cached[1]

    def _folder(self, path: Path) -> _Folder:
        if path not in self.folders:
            self.folders[path] = _Folder(path)
        folder = self.folders[path]
        if folder.overrides is None:
            folder.overrides = overrides(path)
        return folder

    def discover(self) -> list[tuple[Path, bool, list[Path]]]:
        """``(root, is_sweep, run folders)`` for every sweep under the paths, and the loose run folders."""
        sweeps: dict[Path, list[Path]] = {}
        loose: dict[Path, list[Path]] = {}
        for root in self.paths:
            root = root.resolve()
            if not root.is_dir():
                continue
            found_sweeps, runs = run_folder.discover(root)
            owned, alone = run_folder.by_sweep(found_sweeps, runs)
            for sweep, dirs in owned.items():
                sweeps.setdefault(sweep, []).extend(dirs)
            if alone:
                loose.setdefault(root, []).extend(alone)
        out = [(s, True, sorted(set(r))) for s, r in sorted(sweeps.items())]
        return out + [(root, False, sorted(set(r))) for root, r in sorted(loose.items())]

    def scan(self, now: float | None = None) -> list[SweepState]:
        now = time.time() if now is None else now
        locks = proc_locks()
        out = []
        for root, is_sweep, run_dirs in self.discover():
            out.append(self._sweep(root, is_sweep, run_dirs, now, locks))
        if not out:  # nothing there yet (a sweep about to start): one empty sweep per path
            out = [SweepState(root=p.resolve()) for p in self.paths]
        return out

    def _sweep(self, root: Path, is_sweep: bool, run_dirs: list[Path], now: float,
               locks: set[str] | None) -> SweepState:
        jobs = self._expected(root) if is_sweep else []
        is_slurm = is_sweep and slurm.is_slurm_sweep(root)
        ids = slurm.job_ids(root, len(jobs)) if is_slurm else {}
        match = run_folder.match_jobs(jobs, run_dirs, read_overrides=lambda d: self._folder(d).overrides)
        by_job, extra = match.folders, match.extra
        folder_ids = {d: self._folder(d).job_id() for d in run_dirs} if is_slurm else {}
        wanted = [j for j in list(ids.values()) + list(folder_ids.values()) if j]
        queue = self.slurm.states(wanted, now) if is_slurm else {}
        sweep = SweepState(root=root, slurm=is_slurm)

        def job_state(job_id: str | None) -> slurm.JobState | None:
            if not job_id:
                return None
            return queue.get(job_id) or slurm.JobState(job_id)

        for i, job in enumerate(jobs):
            if i in by_job:
                d = by_job[i]
                job_id = folder_ids.get(d) or ids.get(i)
                sweep.runs.append(run_state(self._folder(d), d.name, now, self.stall_after, locks,
                                            job_state(job_id)))
                continue
            js = job_state(ids.get(i))
            state = RunState(name=f"{i}_{match.name(i)}", path=None, status="queued",
                             job_id=js.job_id if js else None)
            if js is not None and js.state:
                if js.active:
                    state.reason = f"SLURM {js.describe()}"
                    if js.running:
                        state.status, state.reason = "running", "starting"
                else:
                    state.status = "failed"
                    state.reason = f"SLURM job {js.job_id} {js.describe()} before it made its folder"
            sweep.runs.append(state)
        for d in extra:
            name = str(d.relative_to(root)) if d != root else d.name
            sweep.runs.append(run_state(self._folder(d), name, now, self.stall_after, locks,
                                        job_state(folder_ids.get(d))))
        sweep.eta_s = sweep_eta(sweep.runs)
        return sweep


def sweep_eta(runs: list[RunState]) -> float | None:
    """Seconds until the last run ends, if the runs that wait start as the running ones end.

    The running runs each keep their slot (their own ETA); each waiting run (queued, or preempted
    with a requeue pending) takes the first free slot for the typical duration of a run (the mean
    of the finished runs', else of the running runs' estimated totals; a preempted run only for
    its remaining part). None when nothing can be estimated yet.
    """
    if all(r.ended for r in runs):
        return 0.0 if runs else None
    totals = [r.elapsed_s for r in runs if r.status == "finished" and r.elapsed_s > 0]
    if not totals:
        totals = [r.elapsed_s + r.last_record_age_s + r.eta_s for r in runs
                  if r.status == "running" and r.eta_s is not None and r.last_record_age_s is not None]
    typical = sum(totals) / len(totals) if totals else None
    slots: list[float] = []
    for r in runs:
        if r.status not in ACTIVE:
            continue
        if r.eta_s is not None:
            slots.append(r.eta_s)
        elif typical is not None:
            slots.append(max(typical - r.elapsed_s, 0.0))
        else:
            return None
    waiting: list[float] = []
    for r in runs:
        if r.status == "queued":
            waiting.append(typical if typical is not None else float("nan"))
        elif r.status == "preempted" and r.will_resume:
            if r.rate and r.total:
                waiting.append((r.total - r.done) / r.rate)
            else:
                waiting.append(typical * (1 - r.fraction) if typical is not None else float("nan"))
    if any(w != w for w in waiting):
        return None
    heapq.heapify(slots)
    if not slots:
        slots = [0.0]
    for w in waiting:
        heapq.heappush(slots, heapq.heappop(slots) + w)
    return max(slots)
