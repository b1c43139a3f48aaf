"""Evaluate trained runs again from their checkpoints, and render their episodes.

    python -m marl.evaluate PATH... [--episodes 32] [--epsilon 0] [--seed 0] [--env KEY=VALUE ...]
                            [--render [gif|mp4|FILE.gif|FILE.mp4]] [--render-episodes 1]

PATH is a run folder, or a sweep folder (every run under it). Each run's newest readable checkpoint
is loaded as a resumed run loads it (:func:`marl.checkpoint.load_latest`: ``weights_only``, the
previous generation when the newest is damaged); the env, the mixer and the policy are built by the
project's own builders from the run's ``config.yaml`` (``--env`` changes env keys, e.g.
``--env time_limit=100``), and the episodes are played by the training loop's own
:func:`marl.runner.play`: greedy unless ``--epsilon``, on env seeds derived from ``--seed`` (the same
episodes for every run, whatever its training seed).

It prints one row per run (return mean with a 95% bootstrap CI over its episodes, episode length,
each env statistic such as ``battle_won``) and one row per experiment, grouped as ``marl.report``
groups them (:func:`marl.report.aggregate.group_runs`): the mean over seeds of each seed's mean
return, with a 95% CI over seeds (:func:`marl.report.stats.mean_and_iqm`).

What it writes, only inside ``<run>/evaluations/`` (the run's own files are never opened for
writing, so the run stays resumable and its ``metrics.jsonl`` unchanged): one JSON line per
evaluation appended to ``evaluations.jsonl`` (the checkpoint's clocks, the options, every
episode's return and length), and with ``--render`` the rendered episodes. It never takes the run's
lock: a live run keeps training, and its newest checkpoint is evaluated.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from marl.checkpoint import load_latest
from marl.config import with_schema_defaults
from marl.envs.base import derive_seeds
from marl.errors import ConfigError, RunFolderError
from marl.experiment import resolve_device
from marl.learner import Learner
from marl.policy import Policy
from marl.registry import ENVS, MIXERS, import_all_components
from marl.report.model import Estimate, Run
from marl.run_folder import CHECKPOINT_FILE, CONFIG_FILE, EVALUATIONS_DIR, EVALUATIONS_FILE, lock_held, proc_locks

RENDER_FORMATS = ("gif", "mp4")


@dataclass
class Options:
    """How to evaluate (the command line's options)."""

    episodes: int = 32
    epsilon: float = 0.0
    seed: int = 0
    num_envs: int = 8
    env: list[str] = field(default_factory=list)
    device: str = "cpu"
    render: str | None = None  # gif | mp4 (files in the run folder) | a .gif/.mp4 path
    render_episodes: int = 1
    reps: int = 2000  # bootstrap resamples of the CIs


@dataclass
class RunResult:
    """One run evaluated: its checkpoint's clocks, every episode, and the files rendered."""

    run: Run
    clock: dict[str, int]
    returns: list[float]
    lengths: list[int]
    stats: dict[str, list[float]]
    ret: Estimate
    live: bool = False
    renders: list[dict[str, Any]] = field(default_factory=list)  # {"path", "return", "length"} per episode


# --- loading a trained run ------------------------------------------------------------------------

def run_config(run_dir: Path, env_overrides: Sequence[str] = ()) -> DictConfig:
    """The run's saved config (keys added since at their defaults) with ``KEY=VALUE`` env overrides."""
    path = run_dir / CONFIG_FILE
    try:
        cfg = with_schema_defaults(OmegaConf.load(path))
    except Exception as exc:
        raise RunFolderError(f"{path} is unreadable ({type(exc).__name__}: {exc}); is {run_dir} a run folder?") from exc
    for item in env_overrides:
        key, sep, text = item.partition("=")
        add, key = key.startswith("+"), key.lstrip("+")
        if not sep or not key:
            raise ConfigError(f"--env {item!r} is invalid: give KEY=VALUE, e.g. --env time_limit=100")
        if not add and OmegaConf.select(cfg.env, key, default=_ABSENT) is _ABSENT:
            raise ConfigError(f"--env {item!r}: env.{key} is not a key of env.name={cfg.env.name!r} (its keys: "
                              f"{', '.join(cfg.env.keys())}); +{key}=... adds a new one")
        OmegaConf.update(cfg.env, key, yaml.safe_load(text), merge=True, force_add=True)
    return cfg


_ABSENT = object()


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """The run's newest readable checkpoint, loaded as a resumed run loads it."""
    state = load_latest(run_dir)
    if state is None:
        raise RunFolderError(f"{run_dir} has no checkpoint ({CHECKPOINT_FILE}): the run saved none yet (it writes one "
                             "every checkpoint.interval and at its end); nothing to evaluate")
    return state


def trained_policy(cfg: DictConfig, spec: Any, state: dict[str, Any], device: torch.device, run_dir: Path) -> Policy:
    """The run's agents with the checkpoint's weights, built as the run built them (through its
    :class:`~marl.learner.Learner`, so that mixers with agent networks of their own load too)."""
    mixer = MIXERS.build(cfg.mixer, n_agents=spec.n_agents, state_dim=spec.state_dim)
    learner = Learner(Policy(spec, cfg.agent), mixer, cfg.learner, device, check_finite=False)
    try:
        learner.load_state_dict(state["learner"])
    except (RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise RunFolderError(f"the checkpoint of {run_dir} does not fit the networks built from its config.yaml "
                             f"({first}); an --env override that changes the observation or action sizes cannot "
                             "be evaluated with these weights") from exc
    return learner.policy.requires_grad_(False)


def is_live(run_dir: Path) -> bool:
    """Whether a process is training in ``run_dir`` now (tested as ``marl.watch`` does, never keeping the lock)."""
    return lock_held(run_dir, proc_locks())


# --- evaluating --------------------------------------------------------------------------------

def ci_of_mean(values: Sequence[float], reps: int, seed: int = 0) -> Estimate:
    """The mean of ``values`` with its 95% stratified-bootstrap CI (the report's statistics code)."""
    from marl.report.stats import mean_and_iqm

    return mean_and_iqm({"x": np.asarray(values, dtype=float)}, reps=reps, seed=seed)["x"]["mean"]


def render_paths(run_dir: Path, opts: Options, n_runs: int, clock: dict[str, int]) -> list[Path]:
    """Where each rendered episode of ``run_dir`` goes (see the module docstring)."""
    n = opts.render_episodes
    if opts.render in RENDER_FORMATS:
        stem = f"episode-{{i}}_env_steps={clock.get('env_steps', 0)}_seed={opts.seed}"
        return [run_dir / EVALUATIONS_DIR / (stem.format(i=i) + f".{opts.render}") for i in range(n)]
    path = Path(str(opts.render))
    if n_runs == 1 and n == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{run_dir.name}-ep{i}{path.suffix}") for i in range(n)]


def evaluate_run(run: Run, opts: Options, n_runs: int = 1) -> RunResult:
    """Evaluate one run folder from its checkpoint (and render its episodes when asked)."""
    from marl.runner import Runner, play

    run_dir = run.path
    import_all_components()
    cfg = run_config(run_dir, opts.env)
    live = is_live(run_dir)
    state = load_checkpoint(run_dir)
    device = resolve_device(opts.device)
    (env_seed,) = derive_seeds(opts.seed, 1, "evaluate")
    env = ENVS.build(cfg.env, num_envs=min(opts.num_envs, opts.episodes), seed=env_seed)
    try:
        policy = trained_policy(cfg, env.spec, state, device, run_dir)
        renders: list[dict[str, Any]] = []
        if opts.render:
            from marl.render import record, write_video

            (render_seed,) = derive_seeds(opts.seed, 1, "render")
            episodes = record(cfg.env, policy, opts.render_episodes, render_seed, opts.epsilon, device)
            for episode, path in zip(episodes, render_paths(run_dir, opts, n_runs, state["clock"])):
                write_video(episode.frames, path)
                renders.append({"path": str(path), "return": episode.team_return, "length": episode.length})
        generator = torch.Generator(device).manual_seed(opts.seed)
        runner = Runner(env, policy, device, generator, record=False)
        returns, lengths, stats = play(runner, opts.episodes, opts.epsilon)
    finally:
        env.close()
    return RunResult(run=run, clock=dict(state["clock"]), returns=returns, lengths=lengths, stats=stats,
                     ret=ci_of_mean(returns, opts.reps), live=live, renders=renders)


def write_record(result: RunResult, opts: Options) -> Path:
    """Append the evaluation to ``<run>/evaluations/evaluations.jsonl``; the run's own files stay untouched."""
    folder = result.run.path / EVALUATIONS_DIR
    folder.mkdir(exist_ok=True)
    record = {"time": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "checkpoint": result.clock, "live": result.live,
              "episodes": opts.episodes, "epsilon": opts.epsilon, "seed": opts.seed, "env": list(opts.env),
              "return_mean": result.ret.value, "return_ci": [result.ret.low, result.ret.high],
              "length_mean": float(np.mean(result.lengths)),
              **{f"{k}_mean": float(np.mean(v)) for k, v in result.stats.items()},
              "returns": result.returns, "lengths": result.lengths,
              "renders": result.renders}
    path = folder / EVALUATIONS_FILE
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    return path


# --- tables ------------------------------------------------------------------------------------

@dataclass
class ExperimentRow:
    """One experiment (the runs that differ only in their seed), aggregated over its seeds."""

    env: str
    label: str
    results: list[RunResult]
    ret: Estimate
    stats: dict[str, float]


def experiment_rows(results: Sequence[RunResult], reps: int = 2000) -> list[ExperimentRow]:
    """Results grouped per env and experiment exactly as ``marl.report`` groups runs; each row's
    return is the mean over seeds of each seed's mean return, with a 95% CI over seeds."""
    from marl.report.aggregate import group_runs, name_groups

    by_path = {r.run.path: r for r in results}
    by_env = group_runs([r.run for r in results])
    env_names, labels = name_groups(by_env)
    rows = []
    for env_key, groups in by_env.items():
        for key, runs in groups.items():
            members = [by_path[run.path] for run in sorted(runs, key=lambda run: str(run.seed))]
            means = [float(np.mean(m.returns)) for m in members]
            names = sorted({k for m in members for k in m.stats})
            stats = {k: float(np.mean([np.mean(m.stats[k]) for m in members if k in m.stats])) for k in names}
            rows.append(ExperimentRow(env_names[env_key], labels[key], members, ci_of_mean(means, reps), stats))
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in [header, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def format_tables(results: Sequence[RunResult], rows: Sequence[ExperimentRow]) -> str:
    from marl.report.markdown import fmt, fmt_estimate

    stat_names = sorted({k for r in results for k in r.stats})
    run_rows = [[str(r.run.path) + (" (live)" if r.live else ""), str(r.clock.get("env_steps", "?")),
                 str(len(r.returns)), fmt_estimate(r.ret), fmt(float(np.mean(r.lengths))),
                 *[fmt(float(np.mean(r.stats[k]))) if k in r.stats else "—" for k in stat_names]]
                for r in results]
    exp_rows = [[row.env, row.label, str(len(row.results)), fmt_estimate(row.ret),
                 *[fmt(row.stats[k]) if k in row.stats else "—" for k in stat_names]] for row in rows]
    return ("Per run (return: mean over episodes, 95% CI)\n"
            + _table(["run", "checkpoint env_steps", "episodes", "return", "length", *stat_names], run_rows)
            + "\n\nPer experiment (return: mean over seeds of each seed's mean, 95% CI over seeds)\n"
            + _table(["env", "experiment", "seeds", "return", *stat_names], exp_rows))


# --- the command line --------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> tuple[list[Path], Options]:
    p = argparse.ArgumentParser(prog="python -m marl.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", type=Path, help="run folders or sweep folders")
    p.add_argument("--episodes", type=int, default=Options.episodes, help="episodes per run (default 32)")
    p.add_argument("--epsilon", type=float, default=Options.epsilon, help="ε of ε-greedy acting (default 0: greedy)")
    p.add_argument("--seed", type=int, default=Options.seed, help="seed of the env episodes and ε draws")
    p.add_argument("--num-envs", type=int, default=Options.num_envs, help="envs stepped as one batch")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="change an env key for the evaluation, e.g. --env time_limit=100 (repeatable)")
    p.add_argument("--device", default=Options.device, help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--render", nargs="?", const="gif", default=None, metavar="gif|mp4|FILE",
                   help="render episodes: gif or mp4 into <run>/evaluations/, or to FILE.gif / FILE.mp4")
    p.add_argument("--render-episodes", type=int, default=Options.render_episodes,
                   help="how many episodes to render per run (default 1)")
    p.add_argument("--reps", type=int, default=Options.reps, help="bootstrap resamples of the CIs")
    a = p.parse_args(argv)
    opts = Options(episodes=a.episodes, epsilon=a.epsilon, seed=a.seed, num_envs=a.num_envs, env=a.env,
                   device=a.device, render=a.render, render_episodes=a.render_episodes, reps=a.reps)
    return a.paths, opts


def check_options(opts: Options) -> None:
    """Refuse bad options before any run is loaded."""
    for key, value, low in (("--episodes", opts.episodes, 1), ("--num-envs", opts.num_envs, 1),
                            ("--render-episodes", opts.render_episodes, 1), ("--reps", opts.reps, 1)):
        if value < low:
            raise ConfigError(f"{key}={value} is invalid: must be >= {low}")
    if not 0.0 <= opts.epsilon <= 1.0:
        raise ConfigError(f"--epsilon={opts.epsilon} is invalid: must be in [0, 1]")
    if opts.render is not None and opts.render not in RENDER_FORMATS:
        from marl.render import check_path

        check_path(Path(opts.render))


def find(paths: Sequence[Path]) -> tuple[list[Run], list[str]]:
    """The run folders under ``paths`` (the report's discovery), and why others cannot be evaluated."""
    from marl.report.runs import find_runs

    runs, _ = find_runs(list(paths))
    problems = [f"cannot evaluate {r.path}: {r.problem}" for r in runs if r.config is None]
    return [r for r in runs if r.config is not None], problems


def main(argv: Sequence[str] | None = None) -> int:
    paths, opts = parse_args(argv)
    torch.set_num_threads(1)
    try:
        check_options(opts)
        runs, problems = find(paths)
    except (ConfigError, RunFolderError, FileNotFoundError) as exc:
        print(f"marl.evaluate: {exc}", file=sys.stderr)
        return 2
    if not runs and not problems:
        print(f"marl.evaluate: no run folder (config.yaml + metrics.jsonl) under {', '.join(map(str, paths))}",
              file=sys.stderr)
        return 2
    results: list[RunResult] = []
    for run in runs:
        try:
            result = evaluate_run(run, opts, n_runs=len(runs))
            write_record(result, opts)
        except (ConfigError, RunFolderError, OSError) as exc:
            problems.append(str(exc) if str(run.path) in str(exc) else f"cannot evaluate {run.path}: {exc}")
            continue
        results.append(result)
        for r in result.renders:
            print(f"rendered {r['path']} (return {r['return']:.4g}, {r['length']} steps)", file=sys.stderr)
    if results:
        print(format_tables(results, experiment_rows(results, opts.reps)))
    for problem in problems:
        print(f"marl.evaluate: {problem}", file=sys.stderr)
    return 2 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
