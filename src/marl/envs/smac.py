"""StarCraft Multi-Agent Challenge through oxwhirl's ``smac``: ``env=smac env.map=3m``.

Imported lazily: ``marl`` never needs ``smac`` unless this env is chosen, and then fails at start-up
with what to install when it (or StarCraft II) is missing. Install oxwhirl's package from GitHub
(``pip install git+https://github.com/oxwhirl/smac.git``) and StarCraft II with its SMAC maps
(``SC2PATH``). The PyPI package named ``smac`` is an unrelated tool (SMAC3, hyperparameter
optimisation): never ``pip install smac``.

Facts this adapter relies on (oxwhirl/smac ``env/starcraft2/starcraft2.py``, not runnable here):

* ``StarCraft2Env(map_name=..., seed=..., **kwargs)``; ``get_env_info()`` gives ``n_agents``,
  ``n_actions``, ``obs_shape``, ``state_shape`` and the map's ``episode_limit`` without starting
  the game. The seed is read when the game is launched, at the first ``reset()``.
* ``step(actions)`` returns ``(reward, terminated, info)``: one team reward; ``terminated`` is
  also set when the map's episode limit is reached, with ``info["episode_limit"] = True``: that
  case is reported here as ``truncated``. ``info["battle_won"]`` is the per-episode statistic.
* ``get_obs()``, ``get_state()`` and ``get_avail_actions()`` (dead agents: only no-op) after every
  reset and step; the state is SMAC's own (``state=auto`` uses it).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marl.envs.gymnasium import to_plain
from marl.envs.python_adapter import EnvInfo, PythonEnvConfig, Transition
from marl.envs.python_vec import PythonVecEnv, build
from marl.errors import ConfigError
from marl.registry import ENVS

INSTALL = ("install oxwhirl's SMAC from GitHub (pip install git+https://github.com/oxwhirl/smac.git) and "
           "StarCraft II with the SMAC maps (set SC2PATH); note that the PyPI package named 'smac' is an "
           "unrelated tool (SMAC3): do not pip install smac")


@dataclass
class SMACConfig(PythonEnvConfig):
    """``map``: a SMAC map (3m, 8m, 2s3z, 5m_vs_6m, MMM2, ...); its episode limit is the map's.
    ``kwargs``: extra ``StarCraft2Env`` arguments (e.g. ``difficulty``, ``reward_sparse``)."""

    name: str = "smac"
    map: str = "3m"
    kwargs: dict[str, Any] = field(default_factory=dict)


def sc2_path() -> Path:
    """Where pysc2 looks for StarCraft II on Linux: ``$SC2PATH`` or ``~/StarCraftII``."""
    return Path(os.environ.get("SC2PATH", Path.home() / "StarCraftII")).expanduser()


def check_installed() -> None:
    """Raise a ConfigError saying what to install when smac.env or StarCraft II is missing."""
    try:
        import smac.env  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"env.name='smac' needs oxwhirl's smac.env, which is not importable ({e}): {INSTALL}") from e
    if not sc2_path().is_dir():
        raise ConfigError(f"env.name='smac' needs StarCraft II, not found at {sc2_path()}: {INSTALL}")


class SMACEnv:
    """One SMAC battle as a :class:`~marl.envs.python_adapter.SingleEnv`."""

    def __init__(self, map_name: str, kwargs: dict[str, Any]) -> None:
        from smac.env import StarCraft2Env

        try:
            self.env = StarCraft2Env(map_name=map_name, **kwargs)
        except KeyError as e:
            raise ConfigError(f"env.map={map_name!r} is not a SMAC map ({e}); e.g. 3m, 8m, 2s3z, 5m_vs_6m") from e
        except TypeError as e:
            raise ConfigError(f"env.kwargs={kwargs!r} is invalid for StarCraft2Env: {e}") from e
        info = self.env.get_env_info()
        self.info = EnvInfo(n_agents=int(info["n_agents"]), obs_dim=int(info["obs_shape"]),
                            n_actions=int(info["n_actions"]), episode_limit=int(info["episode_limit"]),
                            state_dim=int(info["state_shape"]), stats=("battle_won",))
        self._launched = False

    def _observe(self) -> Transition:
        return Transition(obs=np.asarray(self.env.get_obs(), dtype=np.float32),
                          avail=np.asarray(self.env.get_avail_actions(), dtype=bool),
                          state=np.asarray(self.env.get_state(), dtype=np.float32))

    def reset(self, seed: int | None) -> Transition:
        if not self._launched and seed is not None:
            self.env._seed = seed  # read by StarCraft2Env._launch at the first reset
        self._launched = True
        self.env.reset()
        return self._observe()

    def step(self, actions: np.ndarray) -> Transition:
        reward, terminated, info = self.env.step([int(a) for a in actions])
        tr = self._observe()
        limit = bool(info.get("episode_limit", False))
        tr.reward, tr.terminated, tr.truncated = float(reward), bool(terminated) and not limit, limit
        tr.stats = {"battle_won": float(info.get("battle_won", False))}
        return tr

    def close(self) -> None:
        self.env.close()


def _make_single(map_name: str, kwargs: dict[str, Any]) -> SMACEnv:
    return SMACEnv(map_name, kwargs)


@ENVS.register("smac", config=SMACConfig)
def make_smac(cfg: Any, num_envs: int, seed: int, device: Any = "cpu") -> PythonVecEnv:
    check_installed()
    kwargs = to_plain(cfg.kwargs)
    if "seed" in kwargs or "map_name" in kwargs:
        raise ConfigError("env.kwargs.seed/map_name are not allowed: seeds derive from the run's seed; set env.map")
    make = functools.partial(_make_single, str(cfg.map), kwargs)
    return build(cfg, make, num_envs, seed, device)
