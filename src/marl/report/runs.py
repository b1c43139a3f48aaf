"""Find run folders under sweep or run paths and read them back, including the unfinished ones.

The folders' format, each run's status and the rule that matches a sweep's jobs to its folders are
:mod:`marl.run_folder`'s, shared with :mod:`marl.watch`, so the report and the live view count a
sweep the same way. A sweep folder's ``multirun.yaml`` says which jobs the sweep launched, so jobs
without a folder at all (not started yet, or lost) are named too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from marl import run_folder
from marl.report.model import Run
from marl.run_folder import CONFIG_FILE, FAILED, FINISHED, METRICS_FILE, RUNNING, read_records  # noqa: F401
from marl.wandb_naming import to_plain


def load_run(run_dir: Path) -> Run:
    run = Run(path=run_dir)
    records = read_records(run_dir / METRICS_FILE)
    state = run_folder.status(run_dir, records)
    run.warning = state.warning
    if not (run_dir / CONFIG_FILE).is_file():
        run.problem = "starting (no config.yaml yet)" if state.state == RUNNING else state.reason
        run.failed = state.state == FAILED
        return run
    try:
        run.config = to_plain(OmegaConf.load(run_dir / CONFIG_FILE))
    except Exception as exc:
        run.problem = f"unreadable config.yaml ({type(exc).__name__}: {exc})"
        return run
    if not (run_dir / METRICS_FILE).is_file() and state.state != FAILED:
        run.problem = "no metrics.jsonl (failed before the first step)"
        return run
    run.records = records
    run.complete = state.state == FINISHED
    run.failed = state.state == FAILED
    if run.failed:
        run.problem = f"failed at {state.env_steps if state.env_steps is not None else '?'} env_steps: {state.reason}"
    elif not run.complete:
        if not run.records:
            run.problem = "no metrics yet (still starting, or failed before the first record)"
        else:
            unit = str(run.config.get("t_max_unit", "env_steps"))
            done = run.records[-1].get(unit, "?")
            why = "running" if state.state == RUNNING else "preempted, stopped or failed"
            run.problem = f"no final record: stopped at {done}/{run.config.get('t_max', '?')} {unit} ({why})"
    return run


def find_runs(paths: list[Path]) -> tuple[list[Run], list[str]]:
    """Every run folder under ``paths`` (each a sweep folder, a run folder or any folder above them),
    and the jobs that a sweep launched but that have no folder (as ``"<sweep>: <overrides>"``)."""
    run_dirs: set[Path] = set()
    sweeps: set[Path] = set()
    for root in paths:
        root = Path(root).resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a folder")
        found_sweeps, found_runs = run_folder.discover(root)
        sweeps.update(found_sweeps)
        run_dirs.update(found_runs)
    runs = [load_run(d) for d in sorted(run_dirs)]
    missing = []
    owned, _ = run_folder.by_sweep(sorted(sweeps), sorted(run_dirs))
    for sweep, dirs in owned.items():
        match = run_folder.match_jobs(run_folder.expected_jobs(sweep), dirs)
        missing += [f"{sweep}: {match.name(i)} (no run folder: not started yet, or lost)" for i in match.missing]
    return runs, missing


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


def n_agents(config: dict[str, Any], run_dir: Path | None = None) -> int:
    """The number of agents of a run's env: what the run wrote into its folder at start (``spec.json``,
    :mod:`marl.run_folder`), else, for runs made before marl wrote it, read from its config alone
    (nothing is built or imported) by the rules below, which know only these envs.

    Matrix games: 2. LBF: ``env.kwargs.players``, else the ``<N>p`` of ``env.key``. RWARE:
    ``env.kwargs.n_agents``, else the ``<N>ag`` of ``env.key``. MPE: simple_spread's
    ``env.kwargs.N`` (default 3), simple_speaker_listener and simple_reference 2. VMAS:
    ``env.scenario_kwargs.n_agents``. Raises ValueError for anything else.
    """
    spec = run_folder.read_spec(run_dir) if run_dir is not None else None
    if spec is not None and isinstance(spec.get("n_agents"), int):
        return spec["n_agents"]
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
    raise ValueError(f"the number of agents of env {name!r} is not known: its folder has no {run_folder.SPEC_FILE} "
                     "(a run made before marl wrote it) and its config does not say (known from the config: the matrix "
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
        return n_agents(run.config, run.path)
    except ValueError as exc:
        raise ValueError(f"--per-agent: {describe(run)}: {exc}") from exc
