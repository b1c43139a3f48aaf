"""VMAS scenarios (``vmas==1.5.2``) behind the batched protocol: B envs simulated as one torch op.

Facts this adapter relies on (read in the vmas 1.5.2 source):

* VMAS simulates ``num_envs`` worlds in one batch of torch tensors, so the adapter runs
  in-process and adds no Python loop over envs for stepping.
* VMAS never auto-resets. ``Environment.reset_at(index)`` resets one env (an int index; no
  batched form exists because the scenarios' ``reset_world_at`` take an int), so
  :meth:`VmasEnv.reset` loops over the finished indices only and then reads all observations once.
* With ``continuous_actions=False`` each agent has one ``Discrete`` action (the flat product of
  its per-dimension choices, 9 for the default 2-D holonomic agent); there are no masks.
* VMAS has no global state: ``state`` is the concatenation of the agents' observations and the
  spec says ``has_state=False``.
* Rewards are per agent. The team reward is their mean by default, as BenchMARL's QMIX/VDN do
  (``process_batch``: ``reward.mean(-2)``); ``team_reward=sum`` is the alternative. In balance and
  transport every agent gets the same reward, so the mean equals it.
* ``scenario.done()`` is the task's own ending (``terminated``); ``max_steps`` is the time limit
  (``truncated``; only where the task did not also end on that step).
* VMAS keeps ONE random state for all its environments in a class attribute
  (``Environment.vmas_random_state``, swapped in around every public call). Two VMAS envs in one
  process (train and eval) would then share a stream, so this adapter keeps its own copy of that
  state and swaps it in around each of its calls: each env's episodes depend only on its seed.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from marl.config import ComponentConfig
from marl.envs.base import EnvSpec, TimeStep
from marl.errors import ConfigError
from marl.registry import ENVS

TEAM_REWARDS = ("mean", "sum")

# BenchMARL's task configs (benchmarl/conf/task/vmas/*.yaml), applied when benchmarl_defaults=true.
BENCHMARL_TASKS: dict[str, dict[str, Any]] = {
    "balance": {"n_agents": 4, "random_package_pos_on_line": True, "package_mass": 5},
    "navigation": {"n_agents": 3, "collisions": True, "agents_with_same_goal": 1, "split_goals": False,
                   "observe_all_goals": False, "shared_rew": False, "lidar_range": 0.35, "agent_radius": 0.1},
    "transport": {"n_agents": 4, "n_packages": 1, "package_width": 0.15, "package_length": 0.15,
                  "package_mass": 50},
}


@dataclass
class VmasConfig(ComponentConfig):
    """``scenario``: a VMAS scenario name (balance, navigation, transport, ...).

    ``max_steps``: the time limit (truncation). ``team_reward``: mean | sum of the agents' rewards.
    ``benchmarl_defaults``: start from BenchMARL's task parameters for balance, navigation and
    transport (else VMAS's own defaults). ``scenario_kwargs``: extra scenario parameters, applied
    last (e.g. ``+env.scenario_kwargs.n_agents=5``).
    """

    name: str = "vmas"
    scenario: str = "balance"
    max_steps: int = 100
    team_reward: str = "mean"
    benchmarl_defaults: bool = True
    scenario_kwargs: dict[str, Any] = field(default_factory=dict)


def _fresh_rng_state(seed: int) -> list[Any]:
    """A [torch, numpy, python] RNG state seeded with ``seed``, without disturbing the globals."""
    saved = (torch.random.get_rng_state(), np.random.get_state(), random.getstate())
    try:
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        return [torch.random.get_rng_state(), np.random.get_state(), random.getstate()]
    finally:
        torch.random.set_rng_state(saved[0])
        np.random.set_state(saved[1])
        random.setstate(saved[2])


class VmasEnv:
    """``num_envs`` copies of one VMAS scenario with discrete actions (see the module docstring)."""

    def __init__(self, cfg: Any, num_envs: int, seed: int, device: Any = "cpu") -> None:
        import vmas
        from vmas.simulator.environment import Environment

        scenario = str(cfg.scenario)
        known = vmas.scenarios + vmas.mpe_scenarios + vmas.debug_scenarios
        if scenario not in known:
            raise ConfigError(f"env.scenario={scenario!r} is not a VMAS scenario; choose one of: "
                              f"{', '.join(sorted(known))}")
        if cfg.team_reward not in TEAM_REWARDS:
            raise ConfigError(f"env.team_reward={cfg.team_reward!r} is invalid: choose one of "
                              f"{', '.join(TEAM_REWARDS)}")
        if int(cfg.max_steps) <= 0:
            raise ConfigError(f"env.max_steps={cfg.max_steps!r} is invalid: must be > 0")
        kwargs = dict(BENCHMARL_TASKS.get(scenario, {})) if cfg.benchmarl_defaults else {}
        kwargs.update(dict(cfg.scenario_kwargs or {}))
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.team_reward = str(cfg.team_reward)
        self._shared_rng = Environment.vmas_random_state  # the list VMAS's decorator swaps in and out
        self._rng = _fresh_rng_state(seed)
        with self._own_rng():
            try:
                self.env = vmas.make_env(scenario, num_envs=num_envs, device=self.device, continuous_actions=False,
                                         max_steps=int(cfg.max_steps), seed=seed, terminated_truncated=True,
                                         **kwargs)
            except (TypeError, ValueError, AssertionError) as e:
                raise ConfigError(f"env.scenario_kwargs={kwargs!r} is invalid for VMAS scenario {scenario!r}: {e}")
            obs = self.env.reset()
        if not all(isinstance(o, torch.Tensor) for o in obs):
            raise ConfigError(f"env.scenario={scenario!r} has dict observations; this adapter needs flat tensors")
        self.n_agents = len(self.env.agents)
        self.obs_dims = [o.shape[-1] for o in obs]
        self.act_dims = [int(space.n) for space in self.env.action_space.spaces]
        obs_dim, n_actions = max(self.obs_dims), max(self.act_dims)
        self.spec = EnvSpec(
            n_agents=self.n_agents, obs_dim=obs_dim, state_dim=obs_dim * self.n_agents, n_actions=n_actions,
            episode_limit=int(cfg.max_steps), has_state=False, shared_reward=True,
        )
        # Heterogeneous agents are padded to the largest action set; the padding is never available.
        self._avail = (torch.arange(n_actions) < torch.tensor(self.act_dims).unsqueeze(1))
        self._avail = self._avail.unsqueeze(0).expand(num_envs, -1, -1).to(self.device)
        self._obs = self._stack(obs)
        self._no = torch.zeros(num_envs, dtype=torch.bool, device=self.device)

    @contextmanager
    def _own_rng(self) -> Iterator[None]:
        """Swap this env's random state into VMAS's shared slot for the duration of one call."""
        outside = list(self._shared_rng)
        self._shared_rng[:] = self._rng
        try:
            yield
        finally:
            self._rng = list(self._shared_rng)
            self._shared_rng[:] = outside

    def _stack(self, obs: list[torch.Tensor]) -> torch.Tensor:
        if len(set(self.obs_dims)) == 1:
            return torch.stack(obs, dim=1).float()
        out = torch.zeros(self.num_envs, self.n_agents, self.spec.obs_dim, device=self.device)
        for i, o in enumerate(obs):
            out[:, i, : o.shape[-1]] = o
        return out

    def _timestep(self, reward: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor) -> TimeStep:
        return TimeStep(obs=self._obs, state=self._obs.reshape(self.num_envs, -1), avail=self._avail,
                        reward=reward, terminated=terminated, truncated=truncated)

    def reset(self, mask: torch.Tensor | None = None) -> TimeStep:
        with self._own_rng():
            if mask is None:
                obs = self.env.reset()
            else:
                # One scenario reset per finished env (VMAS resets take an int index), then one read.
                for i in mask.nonzero().flatten().tolist():
                    self.env.reset_at(i, return_observations=False)
                obs = self.env.get_from_scenario(get_observations=True, get_rewards=False, get_infos=False,
                                                 get_dones=False)[0]
        self._obs = self._stack(obs)
        zeros = torch.zeros(self.num_envs, device=self.device)
        return self._timestep(zeros, self._no, self._no)

    def step(self, actions: torch.Tensor) -> TimeStep:
        actions = actions.to(self.device)
        with self._own_rng():
            obs, rewards, terminated, truncated, _ = self.env.step([actions[:, i] for i in range(self.n_agents)])
        self._obs = self._stack(obs)
        r = torch.stack(rewards, dim=1).float()
        reward = r.mean(dim=1) if self.team_reward == "mean" else r.sum(dim=1)
        terminated = terminated.bool()
        return self._timestep(reward, terminated, truncated.bool() & ~terminated)

    def state_dict(self) -> dict[str, Any]:
        """{}: VMAS worlds hold scenario-specific tensors with no save API, so a resumed run starts
        fresh episodes (the runner handles {})."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


@ENVS.register("vmas", config=VmasConfig)
def make_vmas(cfg: Any, num_envs: int, seed: int, device: Any = "cpu") -> VmasEnv:
    try:
        import vmas  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"env.name='vmas' needs the vmas package ({e}): pip install -e .[vmas]") from e
    return VmasEnv(cfg, num_envs=num_envs, seed=seed, device=device)
