"""The contract of a Python env adapter: what an env author implements, and the helpers to do it.

Python environments (LBF, RWARE, MPE, any PettingZoo or Gymnasium env, SMAC) step one episode at
a time. An adapter wraps one such env as a :class:`SingleEnv`; :mod:`marl.envs.python_vec` then
holds ``num_envs`` of them (in-process or in worker processes) and presents them to the runner
as one batched :class:`~marl.envs.base.VecEnv`. This module is all an env author needs to read:

* ``info``: an :class:`EnvInfo` with the env's sizes, already in the padded batch layout
  (heterogeneous agents pad to the largest observation and action set);
* ``reset(seed)`` and ``step(actions)`` return a :class:`Transition` of numpy arrays in that
  layout (:func:`pad_obs`, :func:`action_sizes_mask` and :func:`team_reward` build them).
  ``reset`` gets the env's own seed the first time and ``None`` afterwards (continue your RNG);
  ``step`` gets one int action per agent;
* ``terminated`` is the task ending (no bootstrap), ``truncated`` a time limit (bootstrap from
  the final observation). Report them separately: the batch also truncates any episode that
  reaches ``episode_limit`` steps, so that limit is an upper bound the buffer relies on;
* the adapter's config subclasses :class:`PythonEnvConfig` (``num_workers``, ``state``,
  ``team_reward``), and its registered factory ends with :func:`marl.envs.python_vec.build`,
  which checks those keys, derives one seed per env copy and builds the batch::

      @ENVS.register("corridor", config=CorridorConfig)
      def make(cfg, num_envs: int, seed: int, device="cpu") -> PythonVecEnv:
          return build(cfg, functools.partial(CorridorEnv, cfg.time_limit), num_envs, seed, device)

  ``make_env`` must be picklable (a module-level callable or a ``functools.partial`` of one)
  so that worker processes can build their own copies.

``state`` is chosen by ``env.state``: ``native`` (the env's own global state, ``EnvInfo.state_dim
> 0``), ``concat_obs`` (the agents' observations concatenated, as EPyMARL does when an env has no
state), ``auto`` (native if the env has one, else concat_obs) or ``none`` (state_dim 0: a mixer
that needs a state then fails at start-up).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from marl.config import ComponentConfig
from marl.errors import ConfigError

STATE_SOURCES = ("auto", "native", "concat_obs", "none")
TEAM_REWARDS = ("sum", "mean")


@dataclass
class PythonEnvConfig(ComponentConfig):
    """Keys shared by every per-process Python env.

    ``num_workers``: 0 steps the envs in the training process; N > 0 spreads them over N worker
    processes (at most one per env). ``state``: auto | native | concat_obs | none (see the module
    docstring). ``team_reward``: how per-agent rewards become the one team reward (sum | mean).
    """

    num_workers: int = 0
    state: str = "auto"
    team_reward: str = "sum"


@dataclass(frozen=True)
class EnvInfo:
    """Static facts of one single env, already in the padded batch layout.

    ``state_dim`` is the size of the env's own global state (0 when it has none); ``stats`` names
    the per-episode statistics its transitions carry (e.g. SMAC's ``battle_won``).
    """

    n_agents: int
    obs_dim: int
    n_actions: int
    episode_limit: int
    state_dim: int = 0
    stats: tuple[str, ...] = ()


@dataclass
class Transition:
    """One env's reset or step, in the batch layout: obs [n, obs_dim] float32, avail [n, A] bool,
    state [state_dim] float32 (None when the env has no state of its own)."""

    obs: np.ndarray
    avail: np.ndarray
    state: np.ndarray | None = None
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    stats: dict[str, float] = field(default_factory=dict)


class SingleEnv(Protocol):
    """One episode-at-a-time environment behind the batch. ``reset(seed)`` with ``seed=None``
    continues the env's own RNG; ``step`` takes one action per agent (int array [n])."""

    info: EnvInfo

    def reset(self, seed: int | None) -> Transition: ...

    def step(self, actions: np.ndarray) -> Transition: ...

    def close(self) -> None: ...


# --- helpers shared by the adapters -------------------------------------------------------------

def team_reward(rewards: Any, mode: str) -> float:
    """A scalar team reward from a scalar, a list/array or a dict of per-agent rewards."""
    if isinstance(rewards, dict):
        rewards = list(rewards.values())
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim == 0:
        return float(r)
    if r.size == 0:
        return 0.0
    return float(r.sum() if mode == "sum" else r.mean())


def pad_obs(obs: Sequence[Any], obs_dim: int) -> np.ndarray:
    """Per-agent observations (any shapes, flattened) -> [n, obs_dim] float32, zero-padded."""
    rows = [np.asarray(o, dtype=np.float32).reshape(-1) for o in obs]
    if all(r.shape[0] == obs_dim for r in rows):
        return np.stack(rows)
    out = np.zeros((len(rows), obs_dim), dtype=np.float32)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out


def action_sizes_mask(sizes: Sequence[int]) -> np.ndarray:
    """[n, max(sizes)] bool: True on each agent's real actions, False on the padding."""
    return np.arange(max(sizes))[None, :] < np.asarray(sizes)[:, None]


def load_callable(path: str, key: str) -> Callable[..., Any]:
    """Resolve ``"pkg.module:attr.attr"`` to a callable; errors name the config ``key``."""
    module_name, sep, attr = str(path).partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{key}={path!r} is invalid: give an import path 'pkg.module:callable'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{key}={path!r} is invalid: cannot import {module_name!r} ({e})") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{key}={path!r} is invalid: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{key}={path!r} is invalid: {attr!r} is not callable")
    return obj


def check_common(cfg: Any) -> None:
    """Validate the keys of :class:`PythonEnvConfig` (and ``time_limit`` where the env has one)."""
    if str(cfg.state) not in STATE_SOURCES:
        raise ConfigError(f"env.state={cfg.state!r} is invalid: choose one of {', '.join(STATE_SOURCES)}")
    if str(cfg.team_reward) not in TEAM_REWARDS:
        raise ConfigError(f"env.team_reward={cfg.team_reward!r} is invalid: choose one of "
                          f"{', '.join(TEAM_REWARDS)}")
    if int(cfg.num_workers) < 0:
        raise ConfigError(f"env.num_workers={cfg.num_workers!r} is invalid: must be >= 0 (0 = in-process)")
    if "time_limit" in cfg and int(cfg.time_limit) <= 0:
        raise ConfigError(f"env.time_limit={cfg.time_limit!r} is invalid: must be > 0")
