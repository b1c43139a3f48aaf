"""The run folder: its files, how each is written and read back, a run's status, and which folder is
which job of a sweep.

A run folder is ``marl``'s unit of truth: resume, SLURM requeue, ``marl.watch``, ``marl.report``
and the end-of-sweep summary all read it back, so its format has this one owner. Free of torch,
so that the viewer and the report start fast. The files:

* ``config.yaml``: the run's composed config (what ``check_resumable`` compares on resume);
* ``metrics.jsonl``: one JSON record per line, each ending in a newline; a run that reached
  ``t_max`` ends with ``{"final": 1.0}``, a run that failed has ``{"status": "failed", "reason": ...}``;
* ``status.json``: ``{"status": "failed", "error", "reason", clocks, "time"}`` when a run failed
  (removed when a new attempt starts), and ``error.log`` the traceback;
* ``spec.json``: the env's ``EnvSpec`` (number of agents, dimensions), so that nothing downstream
  guesses them from the env's name;
* ``seeds.json``: the root seed and every seed derived from it;
* ``checkpoint.pt`` and ``checkpoint.prev.pt`` (:mod:`marl.checkpoint`), ``run.lock``
  (:mod:`marl.runlock`), ``wandb_id.txt`` (:mod:`marl.logger`);
* ``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml``: Hydra's record of the job
  (:func:`write_hydra_files`; the overrides match a folder to its sweep's job).

Nothing here is written by a start that is refused (docs/architecture.md, "The data path", step 3).
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import shutil
import socket
import time
import traceback
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from omegaconf import OmegaConf

from marl.errors import WriteError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SEEDS_FILE = "seeds.json"
SPEC_FILE = "spec.json"
STATUS_FILE = "status.json"
ERROR_LOG = "error.log"
LOCK_FILE = "run.lock"
CHECKPOINT_FILE = "checkpoint.pt"
PREVIOUS_FILE = "checkpoint.prev.pt"
WANDB_ID_FILE = "wandb_id.txt"
HYDRA_DIR = ".hydra"
OVERRIDES_FILE = Path(HYDRA_DIR) / "overrides.yaml"
MULTIRUN_FILE = "multirun.yaml"  # in a sweep folder: the sweep's overrides
EVALUATIONS_DIR = "evaluations"  # marl.evaluate's records and renders; the run's own files stay untouched
EVALUATIONS_FILE = "evaluations.jsonl"  # in EVALUATIONS_DIR: one JSON record per evaluation, appended
RENDERS_DIR = "renders"  # greedy episodes rendered during training (render.interval)
SKIP_DIRS = {HYDRA_DIR, "wandb", "__pycache__", EVALUATIONS_DIR, RENDERS_DIR}

FINISHED, FAILED, RUNNING, UNFINISHED = "finished", "failed", "running", "unfinished"
# A training record with this key says the learned value left the range no sound learner leaves
# (marl.value_guard); beside it, the value and the bound: q_taken_mean, value_bound_low/_high.
VALUE_BOUND_KEY = "value_out_of_bounds"


def free_space(path: Path) -> str:
    try:
        return f"{shutil.disk_usage(path).free / 2**20:.1f} MiB free there"
    except OSError:
        return "free space unknown"


# --- metrics.jsonl --------------------------------------------------------------------------------

def parse_record(line: bytes | str) -> dict[str, Any] | None:
    """One line of ``metrics.jsonl`` as a record; None for a line that is not a whole JSON object."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


class JsonlSink:
    """Appends one JSON object per line. ``offset`` is the byte length after the last record, which
    a checkpoint stores so that a resumed run truncates records written after it (no duplicates)."""

    def __init__(self, path: Path, offset: int | None = None) -> None:
        self.path = path
        if offset is not None and path.exists():
            with open(path, "r+b") as f:
                f.truncate(offset)
        self.file = open(path, "a", encoding="utf-8")

    @property
    def offset(self) -> int:
        self.file.flush()
        return self.file.tell()

    def write(self, record: dict[str, Any]) -> None:
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as exc:
            raise WriteError(f"could not write {self.path}: {exc.strerror or exc} ({free_space(self.path.parent)}); "
                             "the records and the checkpoint written before are intact: free some space, then start "
                             "the run again in the same folder to resume it") from exc

    def close(self) -> None:
        if self.file.closed:
            return
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError:
            pass  # a full disk: the failure was reported when the write failed
        finally:
            self.file.close()


class MetricsTail:
    """The records of a ``metrics.jsonl``, read incrementally (only the bytes appended since the last
    :meth:`read`). A last line without its newline is torn (a crash mid-write, or a write in
    progress) and waits for its end; a line that is not a JSON object is skipped. A file that shrank
    or whose last read line changed (a resumed run truncates to its checkpoint, then appends) is
    read again from the start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self.offset = 0
        self.last_line = b""
        self.ino: int | None = None
        self.mtime: float | None = None

    def _reset(self) -> None:
        self.records, self.offset, self.last_line = [], 0, b""

    def read(self) -> list[dict[str, Any]]:
        try:
            st = os.stat(self.path)
            with open(self.path, "rb") as f:
                if st.st_ino != self.ino or st.st_size < self.offset:
                    self._reset()
                elif self.last_line:
                    f.seek(self.offset - len(self.last_line))
                    if f.read(len(self.last_line)) != self.last_line:
                        self._reset()
                self.ino, self.mtime = st.st_ino, st.st_mtime
                f.seek(self.offset)
                data = f.read()
        except OSError:
            self._reset()
            self.ino = self.mtime = None
            return self.records
        end = data.rfind(b"\n")
        if end < 0:
            return self.records
        for line in data[:end + 1].splitlines(keepends=True):
            record = parse_record(line)
            if record is not None:
                self.records.append(record)
            self.last_line = line
        self.offset += end + 1
        return self.records


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every whole record of a ``metrics.jsonl`` (empty if it does not exist)."""
    return list(MetricsTail(Path(path)).read())


def is_finished(records: list[dict[str, Any]]) -> bool:
    return any("final" in r for r in records)


def finished_result(run_dir: Path) -> dict[str, float] | None:
    """The last evaluation of a run whose ``metrics.jsonl`` has its final record, else None."""
    records = read_records(Path(run_dir) / METRICS_FILE)
    if not is_finished(records):
        return None
    evals = [r for r in records if "eval/return_mean" in r]
    return {k: v for k, v in evals[-1].items() if k.startswith("eval/")} if evals else {}


# --- status.json, error.log, seeds.json, spec.json, config.yaml ----------------------------------

def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def record_failure(run_dir: Path, exc: BaseException, clock: dict[str, int] | None = None) -> None:
    """Write ``status.json`` (what failed, where) and the traceback to ``error.log`` in ``run_dir``.

    Best effort: on a full disk these writes fail too, and must not hide the error."""
    status = {"status": FAILED, "error": type(exc).__name__, "reason": str(exc), **(clock or {}),
              "time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    for name, text in ((STATUS_FILE, json.dumps(status, indent=1) + "\n"),
                       (ERROR_LOG, "".join(traceback.format_exception(exc)))):
        try:
            with open(Path(run_dir) / name, "a" if name == ERROR_LOG else "w", encoding="utf-8") as f:
                f.write(text)
        except OSError:
            pass


def clear_failure(run_dir: Path) -> None:
    """A new attempt has started: the run is no longer failed (its error.log keeps the history)."""
    (Path(run_dir) / STATUS_FILE).unlink(missing_ok=True)


def write_json(run_dir: Path, name: str, value: Mapping[str, Any]) -> None:
    (Path(run_dir) / name).write_text(json.dumps(dict(value), indent=1) + "\n", encoding="utf-8")


def read_spec(run_dir: Path) -> dict[str, Any] | None:
    """The env's ``EnvSpec`` as the run wrote it at start (``spec.json``); None for runs made before
    marl wrote it."""
    return read_json(Path(run_dir) / SPEC_FILE)


def write_hydra_files(directory: Path, config: Any, hydra: Any, overrides: Any) -> None:
    """Hydra's record of a job (``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml``), written
    as Hydra's own ``run_job`` writes them. ``conf/config.yaml`` sets ``hydra.output_subdir: null``
    so that Hydra does not write them before the run has decided to start (launch.py calls this)."""
    out = Path(directory) / HYDRA_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name, value in (("config.yaml", config), ("hydra.yaml", hydra), ("overrides.yaml", overrides)):
        (out / name).write_text(OmegaConf.to_yaml(value), encoding="utf-8")


def write_overrides(run_dir: Path, overrides: list[str]) -> None:
    """``overrides`` as Hydra writes them to ``<run_dir>/.hydra/overrides.yaml``: a seed group's
    members are not Hydra jobs of their own, and their W&B group names and the sweep's job
    matching read this file."""
    path = Path(run_dir) / OVERRIDES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(list(overrides)), path)


def overrides(run_dir: Path) -> list[str] | None:
    """The overrides of the job in ``run_dir`` (``.hydra/overrides.yaml``), None if unreadable."""
    path = Path(run_dir) / OVERRIDES_FILE
    if not path.is_file():
        return None
    try:
        return [str(o) for o in (OmegaConf.load(path) or [])]
    except Exception:
        return None


# --- the lock, as a reader sees it ----------------------------------------------------------------

def proc_locks() -> set[str] | None:
    """``major:minor:inode`` of every flock held on this machine (``/proc/locks``), None if unreadable."""
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    held = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK":  # waiters are listed as "N: -> FLOCK ..."
            held.add(parts[5])
    return held


def pid_gone(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, TypeError, OverflowError):
        return False
    return False


def lock_held(run_dir: Path, locks: set[str] | None = None, probe_only: bool = False) -> bool:
    """Whether a process holds ``run_dir/run.lock`` (a live run is there). Never leaves it taken.

    ``/proc/locks`` answers without touching the lock; a holder that wrote this host and a pid that
    no longer exists cannot hold it; else ``flock(LOCK_SH | LOCK_NB)`` on a read-only descriptor,
    released at once, decides (shared, so that two watchers never block each other).
    """
    path = Path(run_dir) / LOCK_FILE
    try:
        st = os.stat(path)
    except OSError:
        return False
    if not probe_only:
        if locks and f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}" in locks:
            return True
        holder = read_json(path) or {}
        if holder.get("host") == socket.gethostname() and pid_gone(holder.get("pid")):
            return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


# --- a run's status -------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunStatus:
    """``state``: finished, failed, running (a process holds the folder) or unfinished (nothing runs
    it: preempted, killed, or not started); ``reason`` says why, for failed and unfinished."""

    state: str
    reason: str = ""
    env_steps: int | None = None  # where a failed run stopped, when it recorded it
    warning: str = ""  # a learned value out of bounds (marl.value_guard), whatever the state


def value_warning(records: list[dict[str, Any]]) -> str:
    """The first out-of-bounds value in ``records``, as one line, or "" when there is none."""
    first = next((r for r in records if r.get(VALUE_BOUND_KEY)), None)
    if first is None:
        return ""
    return (f"learned value out of bounds from env_steps={first.get('env_steps', '?')}: q_taken_mean="
            f"{first.get('q_taken_mean', float('nan')):.4g} outside [{first.get('value_bound_low', float('nan')):.4g}, "
            f"{first.get('value_bound_high', float('nan')):.4g}] (diverging; docs/faults.md)")


def status(run_dir: Path, records: list[dict[str, Any]] | None = None, running: bool | None = None) -> RunStatus:
    """The one rule for what state a run folder is in, first match wins:

    failed (a ``{"status": "failed"}`` record, or ``status.json`` says so), finished (the
    ``{"final": 1.0}`` record), running (a process holds ``run.lock``), else unfinished.
    ``records``/``running``: what the caller already read (the viewer reads incrementally and asks
    the lock once per scan). ``warning``, in any state: :func:`value_warning`."""
    run_dir = Path(run_dir)
    records = read_records(run_dir / METRICS_FILE) if records is None else records
    return dataclasses.replace(_state(run_dir, records, running), warning=value_warning(records))


def _state(run_dir: Path, records: list[dict[str, Any]], running: bool | None) -> RunStatus:
    failure = next((r for r in reversed(records) if r.get("status") == FAILED), None)
    saved = read_json(run_dir / STATUS_FILE)
    if saved is not None and saved.get("status") == FAILED:
        return RunStatus(FAILED, f"{saved.get('error', 'error')}: {saved.get('reason', '')}", saved.get("env_steps"))
    if failure is not None:
        return RunStatus(FAILED, str(failure.get("reason", "no reason recorded")), failure.get("env_steps"))
    if is_finished(records):
        return RunStatus(FINISHED)
    if lock_held(run_dir) if running is None else running:
        return RunStatus(RUNNING)
    if not (run_dir / CONFIG_FILE).is_file():
        return RunStatus(UNFINISHED, "failed before training started (no config.yaml; see its Hydra log)")
    if not records:
        return RunStatus(UNFINISHED, "no metrics yet (still starting, or failed before the first record)")
    return RunStatus(UNFINISHED, "no final record (preempted, stopped or killed)")


# --- sweeps: which folder is which job ------------------------------------------------------------

def is_run_dir(path: Path, files: set[str], dirs: set[str]) -> bool:
    """A run folder: a run's files, a Hydra job's record, or a run that has taken its folder."""
    if MULTIRUN_FILE in files:
        return False
    return (CONFIG_FILE in files and METRICS_FILE in files) or LOCK_FILE in files or (
        HYDRA_DIR in dirs and (path / OVERRIDES_FILE).is_file())


def discover(root: Path) -> tuple[list[Path], list[Path]]:
    """The sweep folders (holding ``multirun.yaml``) and run folders under ``root``, sorted. A run
    folder holds no other run (its ``wandb/`` and ``.hydra/`` are not runs)."""
    sweeps, runs = [], []
    for here, dirs, files in os.walk(root):
        here_path = Path(here)
        if MULTIRUN_FILE in files:
            sweeps.append(here_path)
        if is_run_dir(here_path, set(files), set(dirs)):
            runs.append(here_path)
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
    return sorted(sweeps), sorted(runs)


def by_sweep(sweeps: list[Path], runs: list[Path]) -> tuple[dict[Path, list[Path]], list[Path]]:
    """Each sweep's run folders (a run belongs to the innermost sweep folder above it), and the runs
    of no sweep."""
    owned: dict[Path, list[Path]] = {s: [] for s in sweeps}
    loose = []
    for run in runs:
        owner = max((s for s in sweeps if run.is_relative_to(s)), key=lambda s: len(s.parts), default=None)
        (owned[owner] if owner is not None else loose).append(run)
    return owned, loose


def expected_jobs(sweep_dir: Path) -> list[list[str]]:
    """The override lists of every job that the sweep in ``sweep_dir`` launches (from multirun.yaml).

    Expanded with Hydra's own override parser, as its basic sweeper does (a cartesian product of the
    sweep values). Empty if the file cannot be read.
    """
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        task = OmegaConf.load(Path(sweep_dir) / MULTIRUN_FILE).hydra.overrides.task
        parsed = OverridesParser.create().parse_overrides([str(o) for o in task])
        axes = []
        for o in parsed:
            key = o.get_key_element()
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
            axes.append([f"{key}={v}" for v in values])
        return [list(combo) for combo in itertools.product(*axes)]
    except Exception:
        return []


def _canonical(items: list[str]) -> frozenset[str]:
    """Overrides as a set of ``key=value`` with Hydra's own formatting of the value."""
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(items)
        return frozenset(f"{o.get_key_element()}={o.get_value_element_as_str()}" for o in parsed)
    except Exception:
        return frozenset(items)


def _key(override: str) -> str:
    return override.split("=", 1)[0]


@dataclass
class JobMatch:
    """A sweep's jobs and its run folders, matched: ``folders[i]`` is job i's folder (absent: no
    folder yet), ``extra`` the folders that are no job of it (or a second folder of one job)."""

    jobs: list[list[str]]
    swept: list[int]
    folders: dict[int, Path] = field(default_factory=dict)
    extra: list[Path] = field(default_factory=list)

    def name(self, i: int) -> str:
        """Job i by its swept values (``mixer=qmix,seed=1``), as its folder is named."""
        job = self.jobs[i]
        return ",".join(sorted(job[k] for k in self.swept)) if self.swept else ",".join(job)

    @property
    def missing(self) -> list[int]:
        return [i for i in range(len(self.jobs)) if i not in self.folders]


def match_jobs(jobs: list[list[str]], run_dirs: list[Path],
               read_overrides: Any = overrides) -> JobMatch:
    """The one rule that matches a sweep's jobs to its run folders: by the swept values alone (as
    the folders are named). A sweep relaunched with another fixed value (a larger ``t_max`` to
    extend it, one more override) names the same jobs, and its earlier folders are those jobs.
    ``read_overrides``: how to read a folder's overrides (the viewer caches them)."""
    swept = [i for i in range(len(jobs[0])) if len({job[i] for job in jobs}) > 1] if jobs else []
    keys = {_key(jobs[0][i]) for i in swept}

    def identity(items: list[str]) -> frozenset[str]:
        return frozenset(o for o in _canonical(items) if _key(o) in keys)

    index: dict[frozenset[str], int] = {}
    for i, job in enumerate(jobs):
        index.setdefault(identity(job), i)
    match = JobMatch(jobs=jobs, swept=swept)
    for d in run_dirs:
        ov = read_overrides(d)
        i = index.get(identity(ov)) if ov is not None else None
        if i is None or i in match.folders:
            match.extra.append(d)
        else:
            match.folders[i] = d
    return match
