"""Typed configuration: dataclass schemas stored in Hydra's ConfigStore, and start-up validation.

The top-level schema is ``config_schema``; each component group (agent, mixer, buffer, env) has
its own schemas, registered by the component modules through :mod:`marl.registry`. Hydra checks
types while composing (``seed=abc`` fails there, naming the key); :func:`validate` checks values
and capabilities before the first environment step (``learner.lr=-1``, ``t_max=0``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from marl.errors import ConfigError
from marl.registry import CONF_DIR  # where compose() reads the YAML files


class Unit(str, Enum):
    """The three clocks of a run. Every schedule names one of them (docs/architecture.md, invariant 2)."""

    env_steps = "env_steps"
    episodes = "episodes"
    grad_steps = "grad_steps"


class TimeLimitEnd(str, Enum):
    """What an episode cut short by a time limit means for its last TD target (invariant 3).

    ``bootstrap``: y = r + γ·V(s_T) from the final observation, the correct target (Pardo et al.
    2018) and the default. ``terminal``: y = r, as if the task had ended there; EPyMARL's gym runner
    does this on every gym task (preset=epymarl). A terminated episode's target is r either way.
    """

    bootstrap = "bootstrap"
    terminal = "terminal"


class Optimizer(str, Enum):
    rmsprop = "rmsprop"
    adam = "adam"


@dataclass
class ComponentConfig:
    """Base of every component schema: ``name`` selects the registered implementation."""

    name: str = MISSING


@dataclass
class EpsilonConfig:
    """Linear ε-greedy schedule from ``start`` to ``finish`` over ``anneal`` units of ``unit``."""

    start: float = 1.0
    finish: float = 0.05
    anneal: int = 50_000
    unit: Unit = Unit.env_steps


@dataclass
class LearnerConfig:
    """The Q-learner shared by every mixer. Defaults are PyMARL's QMIX (docs/architecture.md, "Defaults")."""

    optimizer: Optimizer = Optimizer.rmsprop
    lr: float = 5e-4
    rmsprop_alpha: float = 0.99
    optim_eps: float = 1e-5
    gamma: float = 0.99
    grad_clip: float = 10.0
    double_q: bool = True
    td_lambda: float = 0.0
    batch_size: int = 32
    updates_per_episode: float = 1.0
    target_update_interval: int = 200
    target_update_unit: Unit = Unit.episodes
    target_tau: float = 1.0
    standardise_rewards: bool = False  # EPyMARL's running mean/std of the reward (marl.reward_scaling)
    reward_stats_include_padding: bool = False  # EPyMARL's statistics also take in the batch's padded steps
    time_limit_end: TimeLimitEnd = TimeLimitEnd.bootstrap


@dataclass
class EvalConfig:
    """Greedy evaluation on separate envs every ``interval`` ``unit``; also at the end of a run."""

    interval: int = 10_000
    unit: Unit = Unit.env_steps
    episodes: int = 32
    num_envs: int = 8


@dataclass
class CheckpointConfig:
    """Full checkpoints (written atomically) every ``interval`` ``unit`` and at the end."""

    interval: int = 50_000
    unit: Unit = Unit.env_steps
    save_buffer: bool = True
    buffer_max_mb: int = 2048


@dataclass
class WandbConfig:
    """``mode=auto`` is online with an API key and network, offline otherwise. An online start
    that has not answered within ``init_timeout_s`` falls back to offline logging."""

    mode: str = "auto"
    init_timeout_s: float = 30.0
    project: str = "marl"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class LoggerConfig:
    interval: int = 5_000
    unit: Unit = Unit.env_steps
    console: bool = True
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class FaultsConfig:
    """What a run does about faults that long sweeps meet (docs/architecture.md, invariants 8, 9).

    ``check_finite`` stops the run with a failed status on a NaN/inf loss, gradient norm or
    Q-value. ``lock_wait_s`` is how long to wait for another process that holds the run folder;
    null waits 0 s locally and 600 s inside a SLURM job (a requeued job may start while its
    predecessor is still exiting). ``value_bound``: what a learned value outside the range no sound
    learner leaves (``[min(r_min, 0), max(r_max, 0)] / (1 - γ)``, widened by ``value_bound_margin`` times its width;
    :mod:`marl.value_guard`) does: ``warn`` records it and says so once, ``fail`` stops the run as
    failed, ``off`` does not check.
    """

    check_finite: bool = True
    lock_wait_s: Optional[float] = None
    value_bound: str = "warn"
    value_bound_margin: float = 0.1


@dataclass
class RenderConfig:
    """Render one greedy episode every ``interval`` ``unit`` into ``<run>/renders/`` and W&B (as a
    ``wandb.Video``), to watch a run's behaviour as it learns. ``interval: 0`` (the default) never
    renders. ``format``: gif | mp4. Not part of the experiment: a run may change it when it resumes."""

    interval: int = 0
    unit: Unit = Unit.env_steps
    format: str = "gif"


@dataclass
class Config:
    """One run. ``t_max`` counts in ``t_max_unit``; ``num_envs`` envs are stepped as one batch."""

    agent: Any = MISSING
    mixer: Any = MISSING
    buffer: Any = MISSING
    env: Any = MISSING
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    epsilon: EpsilonConfig = field(default_factory=EpsilonConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    seed: int = 0
    t_max: int = 50_000
    t_max_unit: Unit = Unit.env_steps
    num_envs: int = 1
    seeds_per_process: int = 1
    vector_group: Optional[str] = None
    device: str = "auto"
    threads: int = 1
    run_dir: str = "."
    resume: Optional[str] = None


ConfigStore.instance().store(name="config_schema", node=Config)


class KeyRole(str, Enum):
    """What a top-level key that is not plainly part of the experiment is to a run's identity."""

    replicate = "replicate"      # which repetition: not the experiment (W&B group, report row), fixed on resume
    extent = "extent"            # how long it runs and saves: names the experiment, may grow on resume
    bookkeeping = "bookkeeping"  # where it writes, what it logs, where and how it runs: neither


# The one declaration of those keys (every other key is the experiment, fixed on resume). Read by
# resume (experiment.check_resumable) and by W&B and report grouping (wandb_naming).
KEY_ROLES: dict[str, KeyRole] = {
    "seed": KeyRole.replicate,
    "run_dir": KeyRole.bookkeeping,
    "resume": KeyRole.bookkeeping,
    "t_max": KeyRole.extent,
    "logger": KeyRole.bookkeeping,
    "checkpoint": KeyRole.extent,
    "device": KeyRole.bookkeeping,
    "threads": KeyRole.bookkeeping,
    "faults": KeyRole.bookkeeping,
    "seeds_per_process": KeyRole.bookkeeping,
    "vector_group": KeyRole.bookkeeping,
    "render": KeyRole.bookkeeping,
}
# What a resumed run may change: where it writes, how long it runs, what it logs, where it runs.
RESUME_MAY_CHANGE = tuple(k for k, role in KEY_ROLES.items() if role is not KeyRole.replicate)
# What does not name an experiment: the seed (what a group averages over), paths, logging, where it runs.
NOT_EXPERIMENT = tuple(k for k, role in KEY_ROLES.items() if role is not KeyRole.extent)

WANDB_MODES = ("auto", "online", "offline", "disabled")
VALUE_BOUND_MODES = ("warn", "fail", "off")  # faults.value_bound (marl.value_guard)
DEVICES = ("auto", "cpu", "cuda")


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def _positive(cfg: DictConfig, *keys: str) -> None:
    for key in keys:
        value = OmegaConf.select(cfg, key)
        _require(value is not None and value > 0, key, value, "must be > 0")


def validate(cfg: DictConfig) -> None:
    """Check values that types alone cannot; raise :class:`ConfigError` naming the key."""
    from marl.registry import AGENTS, BUFFERS, ENVS, MIXERS

    for registry in (AGENTS, MIXERS, BUFFERS, ENVS):
        node = cfg[registry.kind]
        name = node.get("name") if isinstance(node, DictConfig) else None
        registry.get(str(name))  # unknown names list the registered ones
    _positive(
        cfg,
        "t_max", "num_envs", "seeds_per_process", "threads", "learner.lr", "learner.batch_size", "learner.grad_clip",
        "learner.target_update_interval", "epsilon.anneal", "eval.interval", "eval.episodes",
        "eval.num_envs", "checkpoint.interval", "logger.interval", "buffer.capacity",
    )
    _require(0.0 <= cfg.learner.gamma <= 1.0, "learner.gamma", cfg.learner.gamma, "must be in [0, 1]")
    _require(0.0 <= cfg.learner.td_lambda <= 1.0, "learner.td_lambda", cfg.learner.td_lambda,
             "must be in [0, 1]")
    _require(0.0 < cfg.learner.target_tau <= 1.0, "learner.target_tau", cfg.learner.target_tau,
             "must be in (0, 1]; 1 is a hard update")
    _require(cfg.learner.updates_per_episode >= 0 and math.isfinite(cfg.learner.updates_per_episode),
             "learner.updates_per_episode", cfg.learner.updates_per_episode, "must be >= 0")
    for key in ("epsilon.start", "epsilon.finish"):
        value = OmegaConf.select(cfg, key)
        _require(0.0 <= value <= 1.0, key, value, "must be in [0, 1]")
    _require(cfg.buffer.capacity >= cfg.learner.batch_size, "buffer.capacity", cfg.buffer.capacity,
             f"must be >= learner.batch_size={cfg.learner.batch_size}")
    _require(cfg.logger.wandb.mode in WANDB_MODES, "logger.wandb.mode", cfg.logger.wandb.mode,
             f"choose one of {', '.join(WANDB_MODES)}")
    _require(cfg.device in DEVICES or cfg.device.startswith("cuda:"), "device", cfg.device,
             f"choose one of {', '.join(DEVICES)} or cuda:N")
    _require(cfg.seed >= 0, "seed", cfg.seed, "must be a non-negative integer")
    _require(cfg.faults.value_bound in VALUE_BOUND_MODES, "faults.value_bound", cfg.faults.value_bound,
             f"choose one of {', '.join(VALUE_BOUND_MODES)}")
    _require(cfg.faults.value_bound_margin >= 0, "faults.value_bound_margin", cfg.faults.value_bound_margin,
             "must be >= 0 (a fraction of the bound's width added on each side)")
    _require(cfg.faults.lock_wait_s is None or cfg.faults.lock_wait_s >= 0, "faults.lock_wait_s",
             cfg.faults.lock_wait_s, "must be >= 0 seconds, or null (0 locally, 600 in a SLURM job)")
    interval, fmt = OmegaConf.select(cfg, "render.interval", default=0), OmegaConf.select(cfg, "render.format", default="gif")
    _require(interval >= 0, "render.interval", interval, "must be >= 0 (0: no renders during training)")
    _require(fmt in ("gif", "mp4"), "render.format", fmt, "choose one of gif, mp4")
    _require(cfg.logger.wandb.init_timeout_s > 0, "logger.wandb.init_timeout_s", cfg.logger.wandb.init_timeout_s,
             "must be > 0 seconds")


def with_schema_defaults(saved: DictConfig) -> DictConfig:
    """A config saved by an older version, with the keys added since at their schema defaults.

    A key that did not exist when a run started (e.g. ``learner.time_limit_end``) was running
    with what is now its default, so resuming that run is no configuration change.
    """
    from marl.registry import ALL

    def schema(node: type) -> DictConfig:
        base = OmegaConf.structured(node)
        OmegaConf.set_struct(base, False)  # keys the schema does not know (``+key=``) stay
        return base

    out = OmegaConf.merge(schema(Config), saved)
    for registry in ALL:
        node = saved.get(registry.kind)
        if not isinstance(node, DictConfig) or "name" not in node:
            continue
        if str(node.name) not in registry.names():
            continue  # an unknown name is refused by validate(), with the registered ones listed
        out[registry.kind] = OmegaConf.merge(schema(registry.get(str(node.name)).config), node)
    return out


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys (``mixer.name``) to leaf values; typed values (enums) by their value."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(tree, list):
        return {prefix[:-1]: [getattr(v, "value", v) for v in tree]}
    return {prefix[:-1]: getattr(tree, "value", tree)}


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose the config as ``launch.py`` would, without running Hydra's job machinery.

    Used by tests and tools. ``hydra`` keys are dropped so the result is the run config alone.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from marl.registry import import_all_components

    import_all_components()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    return cfg
