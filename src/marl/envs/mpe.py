"""Multi-Agent Particle Environments through ``mpe2==1.1.1``: ``env=mpe env.scenario=simple_spread``.

PettingZoo 1.27 no longer ships MPE; ``mpe2`` is its maintained home. Facts this adapter relies
on (read in mpe2 1.1.1's ``_mpe_utils/simple_env.py`` and pettingzoo's ``aec_to_parallel``):

* each scenario is a module ``mpe2.<scenario>_v<N>`` (simple_spread_v3,
  simple_speaker_listener_v4, simple_reference_v3, ...) with ``parallel_env(max_cycles=...,
  continuous_actions=False, ...)``; the adapter finds the module by the scenario name.
* an episode lasts ``max_cycles`` steps (25 by default) and ends as *truncation*
  (``truncations`` all True); a scenario's ``is_terminal`` ends it as *termination*. The
  adapter passes ``time_limit`` as ``max_cycles``.
* ``env.state()`` is the concatenation of every agent's (unpadded) observation, with a matching
  ``state_space``: ``state=auto`` uses it.
* agents can differ: in simple_speaker_listener the speaker observes 3 numbers and has 3 actions
  (its message), the listener observes 11 and has 5 moves. Observations are zero-padded to the
  largest and the padded actions are never available. In simple_reference every agent both moves
  and speaks: 5 moves x 10 words = 50 discrete actions each.
* rewards are per agent (in simple_spread each is ``(1 - local_ratio) * global + local_ratio *
  local``, with ``local_ratio=0.5``); the team reward is their sum (``team_reward=sum``).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re
from dataclasses import dataclass, field
from typing import Any

from marl.envs.gymnasium import to_plain
from marl.envs.pettingzoo import PettingZooParallelEnv
from marl.envs.python_adapter import PythonEnvConfig
from marl.envs.python_vec import PythonVecEnv, build
from marl.errors import ConfigError
from marl.registry import ENVS

_VERSIONED = re.compile(r"^(?P<scenario>[a-z_]+)_v(?P<version>\d+)$")


def scenarios() -> dict[str, str]:
    """Scenario name -> the module of its newest version in the installed mpe2."""
    import mpe2

    found: dict[str, tuple[int, str]] = {}
    for info in pkgutil.iter_modules(mpe2.__path__):
        m = _VERSIONED.match(info.name)
        if m:
            version = int(m.group("version"))
            if m.group("scenario") not in found or version > found[m.group("scenario")][0]:
                found[m.group("scenario")] = (version, f"mpe2.{info.name}")
    return {name: module for name, (_, module) in found.items()}


@dataclass
class MPEConfig(PythonEnvConfig):
    """``scenario``: an mpe2 scenario (simple_spread, simple_speaker_listener, simple_reference, ...).
    ``time_limit``: steps per episode, passed as ``max_cycles`` (mpe2's and EPyMARL's default: 25).
    ``kwargs``: extra scenario arguments (e.g. ``N``, ``local_ratio``)."""

    name: str = "mpe"
    scenario: str = "simple_spread"
    time_limit: int = 25
    kwargs: dict[str, Any] = field(default_factory=dict)


def _make_single(module: str, kwargs: dict[str, Any], time_limit: int, reward: str) -> PettingZooParallelEnv:
    parallel_env = importlib.import_module(module).parallel_env
    try:
        env = parallel_env(max_cycles=time_limit, continuous_actions=False, **kwargs)
    except TypeError as e:
        raise ConfigError(f"env.kwargs={kwargs!r} is invalid for {module}.parallel_env: {e}") from e
    return PettingZooParallelEnv(env, time_limit, reward, name="mpe")


@ENVS.register("mpe", config=MPEConfig)
def make_mpe(cfg: Any, num_envs: int, seed: int, device: Any = "cpu") -> PythonVecEnv:
    try:
        import mpe2  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"env.name='mpe' needs mpe2 ({e}): pip install -e .[mpe]") from e
    known = scenarios()
    scenario = str(cfg.scenario)
    if scenario not in known:
        raise ConfigError(f"env.scenario={scenario!r} is not an mpe2 scenario; choose one of: "
                          f"{', '.join(sorted(known))}")
    kwargs = to_plain(cfg.kwargs)
    for key, instead in (("max_cycles", "env.time_limit"), ("continuous_actions", "nothing: actions are discrete")):
        if key in kwargs:
            raise ConfigError(f"env.kwargs.{key} is not allowed: set {instead}")
    make = functools.partial(_make_single, known[scenario], kwargs, int(cfg.time_limit), str(cfg.team_reward))
    return build(cfg, make, num_envs, seed, device)
