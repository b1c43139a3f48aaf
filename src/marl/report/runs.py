"""Find run folders under sweep or run paths and read them back, including the unfinished ones.

A run folder is what :mod:`marl.experiment` writes: ``config.yaml`` and ``metrics.jsonl`` (one JSON
record per line; a run that reached ``t_max`` ends with a ``{"final": 1.0}`` record). A Hydra job
folder (``.hydra/``) without them is a run that failed before training started. A sweep folder's
``multirun.yaml`` says which jobs the sweep launched, so jobs without a folder at all (not started
yet, or lost) are named too.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from marl.report.model import Run
from marl.wandb_naming import OVERRIDES_FILE, to_plain

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
MULTIRUN_FILE = "multirun.yaml"
SKIP_DIRS = {".hydra", "wandb", "__pycache__"}


def _overrides(run_dir: Path) -> list[str] | None:
    path = run_dir / OVERRIDES_FILE
    if not path.is_file():
        return None
    try:
        return [str(o) for o in (OmegaConf.load(path) or [])]
    except Exception:
        return None


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``; a torn last line (a crash mid-write) is skipped."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def load_run(run_dir: Path) -> Run:
    run = Run(path=run_dir)
    config_file, metrics_file = run_dir / CONFIG_FILE, run_dir / METRICS_FILE
    if not config_file.is_file():
        run.problem = "failed before training started (no config.yaml; see its Hydra log)"
        return run
    try:
        run.config = to_plain(OmegaConf.load(config_file))
    except Exception as exc:
        run.problem = f"unreadable config.yaml ({type(exc).__name__}: {exc})"
        return run
    if not metrics_file.is_file():
        run.problem = "no metrics.jsonl (failed before the first step)"
        return run
    run.records = read_records(metrics_file)
    run.complete = any("final" in r for r in run.records)
    failure = next((r for r in reversed(run.records) if r.get("status") == "failed"), None)
    if failure is not None:
        run.complete, run.failed = False, True
        run.problem = f"failed at {failure.get('env_steps', '?')} env_steps: {failure.get('reason', 'no reason recorded')}"
    elif not run.complete:
        if not run.records:
            run.problem = "no metrics yet (still starting, or failed before the first record)"
        else:
            unit = str(run.config.get("t_max_unit", "env_steps"))
            done = run.records[-1].get(unit, "?")
            run.problem = (f"no final record: stopped at {done}/{run.config.get('t_max', '?')} {unit} "
                           "(still running, preempted or failed)")
    return run


def _is_run_dir(path: Path, files: set[str], dirs: set[str]) -> bool:
    return CONFIG_FILE in files and METRICS_FILE in files or (
        ".hydra" in dirs and (path / OVERRIDES_FILE).is_file() and MULTIRUN_FILE not in files)


def expected_jobs(sweep_dir: Path) -> list[list[str]]:
    """The override lists of every job that the sweep in ``sweep_dir`` launches (from multirun.yaml).

    Expanded with Hydra's own override parser, as its basic sweeper does (a cartesian product of the
    sweep values). Empty if the file cannot be read.
    """
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        task = OmegaConf.load(sweep_dir / MULTIRUN_FILE).hydra.overrides.task
        parsed = OverridesParser.create().parse_overrides([str(o) for o in task])
        axes = []
        for o in parsed:
            key = o.get_key_element()
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
            axes.append([f"{key}={v}" for v in values])
        return [list(combo) for combo in itertools.product(*axes)]
    except Exception:
        return []


def _canonical(overrides: list[str]) -> frozenset[str]:
    """Overrides as a set of ``key=value`` with Hydra's own formatting of the value."""
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(overrides)
        return frozenset(f"{o.get_key_element()}={o.get_value_element_as_str()}" for o in parsed)
    except Exception:
        return frozenset(overrides)


def find_runs(paths: list[Path]) -> tuple[list[Run], list[str]]:
    """Every run folder under ``paths`` (each a sweep folder, a run folder or any folder above them),
    and the jobs that a sweep launched but that have no folder (as ``"<sweep>: <overrides>"``)."""
    run_dirs: list[Path] = []
    sweeps: list[Path] = []
    for root in paths:
        root = Path(root).resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a folder")
        for here, dirs, files in os.walk(root):
            here_path = Path(here)
            if MULTIRUN_FILE in files:
                sweeps.append(here_path)
            if _is_run_dir(here_path, set(files), set(dirs)):
                run_dirs.append(here_path)
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
    run_dirs = sorted(set(run_dirs))
    runs = [load_run(d) for d in run_dirs]
    missing = []
    for sweep in sorted(set(sweeps)):
        jobs = expected_jobs(sweep)
        swept = [i for i in range(len(jobs[0]))
                 if len({job[i] for job in jobs}) > 1] if jobs else []
        # A job is identified by its swept values alone (as its folder name is): a run launched
        # by an earlier command of the same sweep, with other fixed overrides, is still that job.
        keys = {_key(jobs[0][i]) for i in swept}
        found = {_swept(_canonical(ov), keys) for d in run_dirs
                 if d.is_relative_to(sweep) and (ov := _overrides(d)) is not None}
        for job in jobs:
            if _swept(_canonical(job), keys) not in found:
                name = ",".join(job[i] for i in swept) or ",".join(job)
                missing.append(f"{sweep}: {name} (no run folder: not started yet, or lost)")
    return runs, missing


def _key(override: str) -> str:
    return override.split("=", 1)[0]


def _swept(overrides: frozenset[str], keys: set[str]) -> frozenset[str]:
    """The ``key=value`` items of ``overrides`` whose key the sweep varies."""
    return frozenset(o for o in overrides if _key(o) in keys)


def describe(run: Run) -> str:
    """A short human name of a run: its folder and, when known, its mixer and seed."""
    if run.config is None:
        return str(run.path)
    mixer = (run.config.get("mixer") or {}).get("name", "?")
    return f"{run.path} ({mixer}, seed {run.seed})"



MATRIX_GAMES = ("two_step", "climbing", "penalty", "nonmonotonic")  # two players each (marl.envs.matrix)
SHARED_REWARD_ENVS = MATRIX_GAMES + ("smac", "smax")  # one team reward, which is every agent's reward
MPE_AGENTS = {"simple_speaker_listener": 2, "simple_reference": 2}  # fixed by the scenario (mpe2 1.1.1)
MPE_SPREAD_DEFAULT_N = 3  # mpe2 simple_spread_v3's default N


def n_agents(config: dict[str, Any]) -> int:
    """The number of agents of a run's env, read from its config alone (nothing is built or imported).

    Matrix games: 2. LBF: ``env.kwargs.players``, else the ``<N>p`` of ``env.key``. RWARE:
    ``env.kwargs.n_agents``, else the ``<N>ag`` of ``env.key``. MPE: simple_spread's
    ``env.kwargs.N`` (default 3), simple_speaker_listener and simple_reference 2. VMAS:
    ``env.scenario_kwargs.n_agents``. Raises ValueError for anything else.
    """
    env = config.get("env") or {}
    name, kwargs = str(env.get("name")), env.get("kwargs") or {}
    if name in MATRIX_GAMES:
        return 2
    if name in ("lbf", "rware"):
        key, pattern = ("players", r"-(\d+)p-") if name == "lbf" else ("n_agents", r"-(\d+)ag\b")
        if key in kwargs:
            return int(kwargs[key])
        m = re.search(pattern, str(env.get("key", "")))
        if m:
            return int(m.group(1))
    if name == "mpe":
        scenario = str(env.get("scenario", "simple_spread"))
        if scenario == "simple_spread":
            return int(kwargs.get("N", MPE_SPREAD_DEFAULT_N))
        if scenario in MPE_AGENTS:
            return MPE_AGENTS[scenario]
        name = f"mpe {scenario}"
    if name == "vmas" and "n_agents" in (env.get("scenario_kwargs") or {}):
        return int(env["scenario_kwargs"]["n_agents"])
    raise ValueError(f"the number of agents of env {name!r} is not known from its config (known: the matrix "
                     "games, lbf, rware, mpe simple_spread/simple_speaker_listener/simple_reference, vmas with "
                     "env.scenario_kwargs.n_agents)")


def return_divisor(run: Run) -> int:
    """What ``--per-agent`` divides a run's returns by: its number of agents where the team reward is the
    sum of the agents' rewards (``env.team_reward=sum``, the default), else 1: the team reward is then
    already per agent (``env.team_reward=mean``, or one shared payoff that every agent receives: the
    matrix games, SMAC, SMAX). Raises ValueError naming the run when the number of agents is unknown."""
    assert run.config is not None
    env = run.config.get("env") or {}
    if str(env.get("name")) in SHARED_REWARD_ENVS or str(env.get("team_reward", "sum")) == "mean":
        return 1
    try:
        return n_agents(run.config)
    except ValueError as exc:
        raise ValueError(f"--per-agent: {describe(run)}: {exc}") from exc
