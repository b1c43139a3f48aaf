"""Any PettingZoo env, by import path: ``env=pettingzoo env.factory=my_pkg.my_env:parallel_env``.

Facts this adapter relies on (pettingzoo 1.25's ``ParallelEnv`` API):

* ``possible_agents`` fixes the agent order. ``reset(seed=...)`` returns ``(obs, infos)`` and
  ``step({agent: action})`` returns ``(obs, rewards, terminations, truncations, infos)``, all
  dicts keyed by agent; only the agents in ``env.agents`` act.
* every agent needs a ``Discrete`` action space; observation spaces are flattened and zero-padded
  to the largest one, action sets padded with never-available actions (so agents of different
  kinds, like MPE's speaker and listener, share one network).
* action masks, optional: a ``Dict`` observation with ``"observation"`` and ``"action_mask"``
  (PettingZoo's convention), or ``infos[agent]["action_mask"]``.
* an agent that has left (terminated or truncated before the others) observes zeros and has only
  action 0 available until the episode ends; the episode ends when every agent that was still
  playing is done, and counts as truncated if any of them was truncated.
* global state, optional: ``state_space`` and ``state()`` (as MPE has).
* the team reward is the sum (or mean, ``team_reward=mean``) of the rewards of the acting agents.
* an ``AECEnv`` is converted with ``pettingzoo.utils.conversions.aec_to_parallel``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from marl.envs.gymnasium import build_from_factory
from marl.envs.python_adapter import EnvInfo, PythonEnvConfig, Transition, action_sizes_mask, pad_obs, team_reward
from marl.envs.python_vec import PythonVecEnv
from marl.errors import ConfigError
from marl.registry import ENVS


def _obs_part(space: Any) -> tuple[Any, bool]:
    """The observation part of an agent's space, and whether it carries an action mask."""
    from gymnasium import spaces

    if isinstance(space, spaces.Dict) and "observation" in space.spaces:
        return space.spaces["observation"], "action_mask" in space.spaces
    return space, False


class PettingZooParallelEnv:
    """One PettingZoo parallel env as a :class:`~marl.envs.python_adapter.SingleEnv`."""

    def __init__(self, env: Any, time_limit: int, team_reward: str = "sum", name: str = "pettingzoo") -> None:
        from gymnasium import spaces
        from gymnasium.spaces import flatdim
        from pettingzoo.utils.env import AECEnv

        if isinstance(env, AECEnv):
            from pettingzoo.utils.conversions import aec_to_parallel

            env = aec_to_parallel(env)
        self.env, self.team_reward = env, team_reward
        self.agents = list(env.possible_agents)
        self.n_agents = len(self.agents)
        sizes, dims = [], []
        for agent in self.agents:
            act = env.action_space(agent)
            if not isinstance(act, spaces.Discrete):
                raise ConfigError(f"env.name={name!r}: agent {agent!r} has action space {act}; QMIX-style learners "
                                  "need Discrete actions (e.g. continuous_actions=False)")
            sizes.append(int(act.n))
            dims.append(int(flatdim(_obs_part(env.observation_space(agent))[0])))
        self.obs_dim = max(dims)
        self._real_actions = action_sizes_mask(sizes)
        self._gone = np.zeros_like(self._real_actions)
        self._gone[:, 0] = True  # an agent that has left may only "do nothing"
        state_space = getattr(env, "state_space", None)
        self._has_state = state_space is not None
        self.info = EnvInfo(n_agents=self.n_agents, obs_dim=self.obs_dim, n_actions=max(sizes),
                            episode_limit=int(time_limit),
                            state_dim=int(flatdim(state_space)) if self._has_state else 0)

    def _transition(self, obs: dict[str, Any], infos: dict[str, Any]) -> Transition:
        rows, avail = [], self._real_actions.copy()
        for i, agent in enumerate(self.agents):
            o = obs.get(agent)
            if o is None:
                rows.append(np.zeros(self.obs_dim, dtype=np.float32))
                avail[i] = self._gone[i]
                continue
            mask = None
            if isinstance(o, dict) and "observation" in o:
                mask, o = o.get("action_mask"), o["observation"]
            info = infos.get(agent) if isinstance(infos, dict) else None
            if mask is None and isinstance(info, dict):
                mask = info.get("action_mask")
            if mask is not None:
                m = np.asarray(mask, dtype=bool).reshape(-1)
                avail[i, : m.shape[0]] &= m
            rows.append(o)
        state = np.asarray(self.env.state(), dtype=np.float32).reshape(-1) if self._has_state else None
        return Transition(obs=pad_obs(rows, self.obs_dim), avail=avail, state=state)

    def reset(self, seed: int | None) -> Transition:
        obs, infos = self.env.reset(seed=seed)
        return self._transition(obs, infos)

    def step(self, actions: np.ndarray) -> Transition:
        playing = list(self.env.agents)
        idx = {a: i for i, a in enumerate(self.agents)}
        obs, rewards, terms, truncs, infos = self.env.step({a: int(actions[idx[a]]) for a in playing})
        tr = self._transition(obs, infos)
        tr.reward = team_reward([rewards.get(a, 0.0) for a in playing], self.team_reward)
        ended = not self.env.agents or all(terms.get(a, False) or truncs.get(a, False) for a in playing)
        tr.truncated = ended and any(truncs.get(a, False) for a in playing)
        tr.terminated = ended and not tr.truncated
        return tr

    def close(self) -> None:
        self.env.close()


@dataclass
class PettingZooConfig(PythonEnvConfig):
    """``factory``: ``"pkg.module:callable"`` returning a PettingZoo ParallelEnv (or AECEnv);
    ``kwargs``: its keyword arguments. ``time_limit``: the adapter truncates episodes at this many
    steps (set it >= the env's own limit). The default task is MPE's simple_spread (25 steps)."""

    name: str = "pettingzoo"
    factory: str = "mpe2.simple_spread_v3:parallel_env"
    kwargs: dict[str, Any] = field(default_factory=dict)
    time_limit: int = 25


@ENVS.register("pettingzoo", config=PettingZooConfig)
def make_pettingzoo(cfg: Any, num_envs: int, seed: int, device: Any = "cpu") -> PythonVecEnv:
    return build_from_factory(cfg, PettingZooParallelEnv, "my_pkg.my_env:parallel_env", num_envs, seed, device)
