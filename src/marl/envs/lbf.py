"""Level-Based Foraging (``lbforaging==2.0.0``): ``env=lbf env.key=Foraging-8x8-2p-2f-coop-v3``.

Facts this adapter relies on (read in lbforaging 2.0.0's ``foraging/environment.py``):

* ids are registered by ``import lbforaging`` as ``Foraging[-2s]-{s}x{s}-{p}p-{f}f[-coop]-v3``;
  ``-2s`` is the partial view (sight 2), e.g. ``Foraging-2s-8x8-2p-2f-coop-v3``. No Gymnasium
  ``TimeLimit`` is registered: the env counts steps itself (``_max_episode_steps``, 50).
* ``step`` returns one reward per agent (normalised so that a whole episode's food sums to 1
  over all agents). The team reward is their sum (``team_reward=sum``, the default): the spec's
  ``shared_reward`` is then True, as the value-decomposition learners need.
* ``done`` is ``field.sum() == 0 or current_step >= _max_episode_steps`` and ``truncated`` is
  always False. The adapter splits it: ``terminated`` when all food is gone (the task ended, even
  if that happened on the last allowed step), ``truncated`` otherwise (the time limit).
* the valid actions live in ``env.unwrapped._valid_actions``: a dict from each ``Player`` (in
  ``env.unwrapped.players`` order) to the list of valid ``Action`` enums (NONE=0, NORTH, SOUTH,
  WEST, EAST, LOAD=5), recomputed after every reset and step. They are the avail masks; NONE is
  always valid and LOAD only next to food. (The env itself turns an invalid action into NONE.)
  ``action_masks=false`` reports every action as available instead, as EPyMARL's gym wrapper does
  (its ``get_avail_agent_actions`` returns all ones): the agents then learn which actions the env
  ignores. Measured: QMIX learned nothing by 300k env steps without the masks, in this adapter
  and in EPyMARL's code alike (docs/results.md).
* there is no global state: ``state=auto`` gives the concatenated observations, as EPyMARL does.
* observations are raw grid coordinates and levels (0..7 on an 8x8 grid, -1 when unseen).
  ``normalize_obs=true`` (the default) divides them by the observation space's largest value.
  Why: QMIX's hypernetworks read the state, and on raw coordinates they start with Q_tot around
  20 for returns of at most 1 and then diverge (measured: Q_tot ~50 after 200k steps, greedy
  return 0, docs/results.md); SMAC's and SMAX's states are normalised the same way.
  ``normalize_obs=false`` gives EPyMARL's raw observations.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from marl.envs.gymnasium import GymMultiAgentEnv, registered_spec, to_plain
from marl.envs.python_adapter import PythonEnvConfig, Transition
from marl.envs.python_vec import PythonVecEnv, build
from marl.errors import ConfigError
from marl.registry import ENVS


@dataclass
class LBFConfig(PythonEnvConfig):
    """``key``: an lbforaging Gymnasium id. ``time_limit``: steps per episode (lbforaging's own
    default and EPyMARL's: 50). ``kwargs``: extra ``ForagingEnv`` arguments (e.g. ``penalty``,
    ``normalize_reward``). ``action_masks``: LBF's valid-action masks (true) or every action
    available (false, EPyMARL's)."""

    name: str = "lbf"
    key: str = "Foraging-8x8-2p-2f-coop-v3"
    time_limit: int = 50
    normalize_obs: bool = True
    action_masks: bool = True
    kwargs: dict[str, Any] = field(default_factory=dict)


class LBFEnv(GymMultiAgentEnv):
    """LBF with its masks read from ``_valid_actions`` and its time limit split out of ``done``."""

    def __init__(self, env: Any, time_limit: int, team_reward: str, normalize_obs: bool,
                 action_masks: bool = True) -> None:
        super().__init__(env, time_limit, team_reward, name="lbf")
        self.action_masks = action_masks
        high = max(float(np.max(space.high)) for space in env.observation_space.spaces)
        self.obs_scale = np.float32(1.0 / high if normalize_obs and high > 0 else 1.0)

    def reset(self, seed: int | None) -> Transition:
        t = super().reset(seed)
        t.obs = t.obs * self.obs_scale
        return t

    def step(self, actions: np.ndarray) -> Transition:
        t = super().step(actions)
        t.obs = t.obs * self.obs_scale
        return t

    def _avail(self, info: dict[str, Any]) -> np.ndarray:
        if not self.action_masks:
            return np.ones((self.n_agents, self.info.n_actions), dtype=bool)
        u = self.env.unwrapped
        avail = np.zeros((self.n_agents, self.info.n_actions), dtype=bool)
        for i, player in enumerate(u.players):
            for action in u._valid_actions[player]:
                avail[i, action.value] = True
        return avail

    def _ending(self, terminated: Any, truncated: Any, info: dict[str, Any]) -> tuple[bool, bool]:
        if not (terminated or truncated):
            return False, False
        all_food_gone = bool(self.env.unwrapped.field.sum() == 0)
        return all_food_gone, not all_food_gone


def _make_single(spec: Any, kwargs: dict[str, Any], time_limit: int, reward: str, normalize_obs: bool,
                 action_masks: bool) -> LBFEnv:
    import gymnasium
    import lbforaging  # noqa: F401  (registers the ids)

    env = gymnasium.make(spec, disable_env_checker=True, **kwargs)
    env.unwrapped._max_episode_steps = time_limit  # the env's own step counter ends episodes here
    return LBFEnv(env, time_limit, reward, normalize_obs, action_masks)


@ENVS.register("lbf", config=LBFConfig)
def make_lbf(cfg: Any, num_envs: int, seed: int, device: Any = "cpu") -> PythonVecEnv:
    key = str(cfg.key)
    spec = registered_spec("lbf", "lbforaging", key,
                           "Foraging-8x8-2p-2f-coop-v3 or the partial view Foraging-2s-8x8-2p-2f-coop-v3")
    kwargs = to_plain(cfg.kwargs)
    if "max_episode_steps" in kwargs:
        raise ConfigError("env.kwargs.max_episode_steps is not allowed: set env.time_limit instead")
    make = functools.partial(_make_single, spec, kwargs, int(cfg.time_limit), str(cfg.team_reward),
                             bool(cfg.normalize_obs), bool(cfg.action_masks))
    return build(cfg, make, num_envs, seed, device)
