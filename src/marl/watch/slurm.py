"""The SLURM side of a sweep: which job runs which job of the sweep, and what SLURM says of it.

hydra-submitit-launcher submits a sweep as job arrays; submitit makes one folder per array task
under ``<sweep>/.submitit/`` (``submitit_folder`` in conf/hydra/launcher/slurm.yaml), named
``<array id>_<task>``, when it submits them; task ``i`` of an array is job ``offset + i`` of the
sweep, the arrays in submission order. A job that started records its id as ``hydra.job.id`` in
its run folder's ``.hydra/hydra.yaml``, which wins (a requeued job keeps its id). States come from
``squeue`` (pending and running jobs) and, for jobs it no longer lists, ``sacct``.
"""

from __future__ import annotations

import getpass
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

SUBMITIT_DIR = ".submitit"
TASK_DIR = re.compile(r"^(\d+)_(\d+)$")
JOB_ID = re.compile(r"^\d+(_\d+)?$")
ACTIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                 "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING"}
RUNNING_STATES = {"RUNNING", "CONFIGURING", "COMPLETING", "STAGE_OUT", "SIGNALING"}


@dataclass
class JobState:
    job_id: str
    state: str | None = None   # e.g. PENDING, RUNNING, COMPLETED, CANCELLED, TIMEOUT; None: SLURM did not say
    reason: str = ""           # squeue's reason of a pending job, or sacct's exit code

    @property
    def active(self) -> bool:
        """Pending or running: SLURM will still do something with it."""
        return self.state in ACTIVE_STATES

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    def describe(self) -> str:
        if not self.state:
            return "(state unknown)"
        reason = self.reason if self.reason and self.reason not in ("None", "0:0") else ""
        return f"{self.state} ({reason})" if reason else self.state


def is_slurm_sweep(sweep_dir: Path) -> bool:
    """Whether the sweep went to SLURM: submitit's folder, or the launcher named in multirun.yaml."""
    if (sweep_dir / SUBMITIT_DIR).is_dir():
        return True
    try:
        text = (sweep_dir / "multirun.yaml").read_text(encoding="utf-8")
    except OSError:
        return False
    return "SlurmLauncher" in text


def job_ids(sweep_dir: Path, n_jobs: int) -> dict[int, str]:
    """SLURM job id (``array_task``) of each job of the sweep by its index, from submitit's folders.

    The arrays are taken in submission order; when a relaunch of the sweep left more tasks than it
    has jobs, only the newest arrays that cover it are used. When the tasks do not add up to the
    jobs (e.g. ``seeds_per_process`` packs several jobs into one task), none is mapped: a started
    job's folder still names its own id (:func:`folder_job_id`).
    """
    arrays: dict[int, list[int]] = {}
    try:
        entries = list((sweep_dir / SUBMITIT_DIR).iterdir())
    except OSError:
        return {}
    for entry in entries:
        m = TASK_DIR.match(entry.name)
        if m and entry.is_dir():
            arrays.setdefault(int(m.group(1)), []).append(int(m.group(2)))
    chosen: list[int] = []
    size = 0
    for array in sorted(arrays, reverse=True):  # newest first
        if size >= n_jobs > 0:
            break
        chosen.insert(0, array)
        size += max(arrays[array]) + 1
    if size != n_jobs:
        return {}
    out: dict[int, str] = {}
    offset = 0
    for array in chosen:
        for task in sorted(arrays[array]):
            out[offset + task] = f"{array}_{task}"
        offset += max(arrays[array]) + 1
    return out


def folder_job_id(run_dir: Path) -> str | None:
    """The SLURM job id that a job wrote into its run folder (``hydra.job.id``), if it ran under SLURM."""
    try:
        value = str(OmegaConf.select(OmegaConf.load(run_dir / ".hydra" / "hydra.yaml"), "hydra.job.id"))
    except Exception:
        return None
    return value if JOB_ID.match(value) else None


ARRAY_RANGE = re.compile(r"^(\d+)_\[([\d,\-]+)(%\d+)?\]$")


def array_task_ids(job_id: str) -> list[str]:
    """The job ids a row of ``sacct`` stands for. Array tasks that never started have no row of their
    own: they are in the array's range row (``9_[1-3,5%2]``: tasks 1, 2, 3 and 5, at most 2 at a
    time), which keeps their state, e.g. CANCELLED after ``scancel`` of a pending array."""
    m = ARRAY_RANGE.match(job_id)
    if m is None:
        return [job_id]
    tasks: list[str] = []
    for part in m.group(2).split(","):
        first, _, last = part.partition("-")
        tasks += [f"{m.group(1)}_{t}" for t in range(int(first), int(last or first) + 1)]
    return tasks


class Queue:
    """squeue and sacct, asked at most every ``every`` seconds; an unreachable SLURM answers nothing."""

    def __init__(self, every: float = 10.0, timeout: float = 15.0) -> None:
        self.every, self.timeout = every, timeout
        self.asked_at: float | None = None
        self.asked_for: frozenset[str] = frozenset()
        self.answer: dict[str, JobState] = {}

    def _run(self, cmd: list[str]) -> list[list[str]]:
        if shutil.which(cmd[0]) is None:
            return []
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout)
        except (OSError, subprocess.SubprocessError):
            return []
        if out.returncode != 0:
            return []
        return [line.split("|") for line in out.stdout.splitlines() if line.strip()]

    def states(self, ids: list[str], now: float) -> dict[str, JobState]:
        wanted = frozenset(ids)
        if not wanted:
            return {}
        if self.asked_at is not None and now - self.asked_at < self.every and wanted <= self.asked_for:
            return self.answer
        answer: dict[str, JobState] = {}
        for row in self._run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%r"]):
            if len(row) >= 3 and row[0] in wanted:
                answer[row[0]] = JobState(row[0], row[1], row[2])
        rest = sorted(wanted - set(answer))
        if rest:
            arrays = sorted({i.split("_")[0] for i in rest})
            for row in self._run(["sacct", "-X", "-n", "-P", "-o", "JobID,State,ExitCode", "-j", ",".join(arrays)]):
                if len(row) < 3:
                    continue
                for job_id in array_task_ids(row[0]):
                    if job_id in wanted and job_id not in answer:
                        answer[job_id] = JobState(job_id, row[1].split()[0] if row[1] else None, row[2])
        self.asked_at, self.asked_for, self.answer = now, wanted, answer
        return answer
