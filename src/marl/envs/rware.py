"""Multi-Robot Warehouse (``rware==2.0.0``): ``env=rware env.key=rware-tiny-2ag-v2``.

Facts this adapter relies on (read in rware 2.0.0's ``warehouse.py`` and ``__init__.py``):

* ids are registered by ``import rware`` as ``rware-{tiny,small,medium,large}-{N}ag[-easy|-hard]-v2``
  with ``max_steps=500``, individual rewards and no inactivity limit. No Gymnasium ``TimeLimit``.
* ``step`` returns one reward per agent (1 to the agent that delivers a requested shelf); the
  team reward is their sum (``team_reward=sum``), so the spec's ``shared_reward`` is True.
* the only endings are ``max_steps`` and, when configured, ``max_inactivity_steps``; both are
  reported as ``done`` with ``truncated=False``. Neither is the task ending, so the adapter reports
  them as ``truncated`` and never ``terminated`` (the learner bootstraps through them).
* there are no action masks (all 5 actions are always available) and no global state
  (``state=auto`` gives the concatenated observations).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from marl.envs.gymnasium import GymMultiAgentEnv, registered_spec, to_plain
from marl.envs.python_adapter import PythonEnvConfig
from marl.envs.python_vec import PythonVecEnv, build
from marl.errors import ConfigError
from marl.registry import ENVS


@dataclass
class RWAREConfig(PythonEnvConfig):
    """``key``: an rware Gymnasium id. ``time_limit``: steps per episode (rware's ``max_steps``,
    500 by default and in EPyMARL). ``kwargs``: extra ``Warehouse`` arguments (e.g.
    ``max_inactivity_steps``, ``reward_type``: individual | global | two_stage)."""

    name: str = "rware"
    key: str = "rware-tiny-2ag-v2"
    time_limit: int = 500
    kwargs: dict[str, Any] = field(default_factory=dict)


class RWAREEnv(GymMultiAgentEnv):
    """RWARE with every ``done`` reported as truncation (its endings are all time limits)."""

    def _ending(self, terminated: Any, truncated: Any, info: dict[str, Any]) -> tuple[bool, bool]:
        return False, bool(terminated) or bool(truncated)


def _make_single(spec: Any, kwargs: dict[str, Any], time_limit: int, reward: str) -> RWAREEnv:
    import gymnasium
    import rware  # registers the ids

    if isinstance(kwargs.get("reward_type"), str):  # YAML gives a name: global | individual | two_stage
        kwargs = {**kwargs, "reward_type": rware.RewardType[kwargs["reward_type"].upper()]}
    env = gymnasium.make(spec, disable_env_checker=True, max_steps=time_limit, **kwargs)
    return RWAREEnv(env, time_limit, reward, name="rware")


@ENVS.register("rware", config=RWAREConfig)
def make_rware(cfg: Any, num_envs: int, seed: int, device: Any = "cpu") -> PythonVecEnv:
    key = str(cfg.key)
    spec = registered_spec("rware", "rware", key, "rware-tiny-2ag-v2")
    kwargs = to_plain(cfg.kwargs)
    if "max_steps" in kwargs or "max_episode_steps" in kwargs:
        raise ConfigError("env.kwargs.max_steps is not allowed: set env.time_limit instead")
    make = functools.partial(_make_single, spec, kwargs, int(cfg.time_limit), str(cfg.team_reward))
    return build(cfg, make, num_envs, seed, device)
