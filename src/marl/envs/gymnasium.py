"""Any Gymnasium multi-agent env, by import path: ``env=gymnasium env.factory=my_pkg.my_env:make``.

The convention is the one LBF and RWARE follow (and EPyMARL's ``gymma`` wrapper reads):

* ``action_space`` is a ``gymnasium.spaces.Tuple`` with one ``Discrete`` per agent;
  ``observation_space`` a ``Tuple`` with one ``Box`` per agent (flattened; smaller ones are
  zero-padded to the largest, and smaller action sets are padded with never-available actions).
* ``reset(seed=...)`` returns ``(obs_tuple, info)``; ``step(actions)`` takes one int per agent and
  returns ``(obs_tuple, reward, terminated, truncated, info)``; ``reward`` is a float or one float
  per agent (summed, or averaged with ``team_reward=mean``); ``terminated``/``truncated`` are bools
  or one bool per agent (the episode ends when every agent is done; it counts as truncated if any
  agent was truncated).
* action masks, optional: ``info["action_mask"]`` (one row of 0/1 per agent) in the reset and step
  infos. Without it every action is available.
* global state, optional: a ``state_space`` attribute and a ``state()`` method on the env.

:class:`GymMultiAgentEnv` is also the base of the LBF and RWARE adapters, which override how
masks and episode endings are read.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from marl.envs.python_adapter import (
    EnvInfo, PythonEnvConfig, Transition, action_sizes_mask, load_callable, pad_obs, team_reward,
)
from marl.envs.python_vec import PythonVecEnv, build
from marl.errors import ConfigError
from marl.registry import ENVS


def _flatdim(space: Any) -> int:
    from gymnasium.spaces import flatdim

    return int(flatdim(space))


class GymMultiAgentEnv:
    """One Gymnasium multi-agent env as a :class:`~marl.envs.python_adapter.SingleEnv`."""

    stats: tuple[str, ...] = ()

    def __init__(self, env: Any, time_limit: int, team_reward: str = "sum", name: str = "gymnasium") -> None:
        from gymnasium import spaces

        self.env, self.team_reward = env, team_reward
        act, obs = env.action_space, env.observation_space
        if not isinstance(act, spaces.Tuple) or not all(isinstance(s, spaces.Discrete) for s in act.spaces):
            raise ConfigError(f"env.name={name!r}: the env's action_space must be a Tuple of Discrete spaces "
                              f"(one per agent), got {act}")
        if not isinstance(obs, spaces.Tuple) or len(obs.spaces) != len(act.spaces):
            raise ConfigError(f"env.name={name!r}: the env's observation_space must be a Tuple with one space per "
                              f"agent, got {obs}")
        self.n_agents = len(act.spaces)
        sizes = [int(s.n) for s in act.spaces]
        self.obs_dim = max(_flatdim(s) for s in obs.spaces)
        self._real_actions = action_sizes_mask(sizes)
        state_space = getattr(env.unwrapped, "state_space", None)
        self._has_state = state_space is not None and callable(getattr(env.unwrapped, "state", None))
        self.info = EnvInfo(n_agents=self.n_agents, obs_dim=self.obs_dim, n_actions=max(sizes),
                            episode_limit=int(time_limit),
                            state_dim=_flatdim(state_space) if self._has_state else 0, stats=self.stats)

    # --- hooks the LBF and RWARE adapters override ----------------------------------------------
    def _avail(self, info: dict[str, Any]) -> np.ndarray:
        mask = info.get("action_mask") if isinstance(info, dict) else None
        if mask is None:
            return self._real_actions
        avail = self._real_actions.copy()
        for i, row in enumerate(mask):
            row = np.asarray(row, dtype=bool).reshape(-1)
            avail[i, : row.shape[0]] &= row
        return avail

    def _ending(self, terminated: Any, truncated: Any, info: dict[str, Any]) -> tuple[bool, bool]:
        term = np.asarray(terminated, dtype=bool).reshape(-1)
        trunc = np.asarray(truncated, dtype=bool).reshape(-1)
        if term.size > 1 or trunc.size > 1:
            term = np.broadcast_to(term, (self.n_agents,))
            trunc = np.broadcast_to(trunc, (self.n_agents,))
            if not (term | trunc).all():
                return False, False
        ended_trunc = bool(trunc.any())
        return bool(term.any()) and not ended_trunc, ended_trunc

    def _state(self) -> np.ndarray | None:
        if not self._has_state:
            return None
        return np.asarray(self.env.unwrapped.state(), dtype=np.float32).reshape(-1)

    # --- SingleEnv ------------------------------------------------------------------------------
    def reset(self, seed: int | None) -> Transition:
        obs, info = self.env.reset(seed=seed)
        return Transition(obs=pad_obs(obs, self.obs_dim), avail=self._avail(info), state=self._state())

    def step(self, actions: np.ndarray) -> Transition:
        obs, reward, terminated, truncated, info = self.env.step([int(a) for a in actions])
        term, trunc = self._ending(terminated, truncated, info)
        return Transition(obs=pad_obs(obs, self.obs_dim), avail=self._avail(info), state=self._state(),
                          reward=team_reward(reward, self.team_reward), terminated=term, truncated=trunc,
                          stats=self._stats(info))

    def _stats(self, info: dict[str, Any]) -> dict[str, float]:
        return {k: float(info[k]) for k in self.stats if isinstance(info, dict) and k in info}

    def close(self) -> None:
        self.env.close()


@dataclass
class GymnasiumConfig(PythonEnvConfig):
    """``factory``: ``"pkg.module:callable"`` returning the env (e.g. ``gymnasium:make`` with
    ``kwargs.id``); ``kwargs``: its keyword arguments. ``time_limit``: the adapter truncates episodes
    at this many steps (set it >= the env's own limit)."""

    name: str = "gymnasium"
    factory: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    time_limit: int = 100


def call_factory(factory: str, kwargs: dict[str, Any]) -> Any:
    """Call the user's env factory; a signature mismatch is a config error naming env.kwargs."""
    fn = load_callable(factory, "env.factory")
    try:
        return fn(**kwargs)
    except TypeError as e:
        raise ConfigError(f"env.kwargs={kwargs!r} is invalid for env.factory={factory!r}: {e}") from e


def _make_from_factory(adapter: Callable[..., Any], factory: str, kwargs: dict[str, Any], time_limit: int,
                       reward: str) -> Any:
    return adapter(call_factory(factory, kwargs), time_limit, reward)


def build_from_factory(cfg: Any, adapter: Callable[..., Any], example: str, num_envs: int, seed: int,
                       device: Any) -> PythonVecEnv:
    """``env=gymnasium`` / ``env=pettingzoo``: B copies of the user's env, built by ``env.factory``
    and wrapped by ``adapter``. The factory is imported here, so a bad path fails at start-up."""
    if not cfg.factory:
        raise ConfigError(f"env.factory='' is invalid: env={cfg.name} needs the import path of a function or class "
                          f"that returns the env, e.g. env.factory={example}")
    load_callable(cfg.factory, "env.factory")
    make = functools.partial(_make_from_factory, adapter, str(cfg.factory), to_plain(cfg.kwargs),
                             int(cfg.time_limit), str(cfg.team_reward))
    return build(cfg, make, num_envs, seed, device)


@ENVS.register("gymnasium", config=GymnasiumConfig)
def make_gymnasium(cfg: Any, num_envs: int, seed: int, device: Any = "cpu") -> PythonVecEnv:
    return build_from_factory(cfg, GymMultiAgentEnv, "my_pkg.my_env:make", num_envs, seed, device)


def registered_spec(env_name: str, package: str, key: str, examples: str) -> Any:
    """The Gymnasium spec of ``key`` after importing ``package`` (which registers its ids), with
    start-up errors that say what to install or which ids exist. Looked up once per run: a lookup
    scans every registered id (~0.1 s)."""
    import gymnasium

    try:
        importlib.import_module(package)
    except ImportError as e:
        raise ConfigError(f"env.name={env_name!r} needs {package} ({e}): pip install -e .[{env_name}]") from e
    try:
        return gymnasium.spec(key)
    except gymnasium.error.Error as e:
        raise ConfigError(f"env.key={key!r} is not an {package} id ({e}); e.g. {examples}") from e


def to_plain(node: Any) -> dict[str, Any]:
    """A config subtree as plain Python containers (picklable for worker processes)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    return dict(node or {})
