"""Two tiny envs defined in the test suite and loaded by import path, as a user's own env would be:
``env=pettingzoo env.factory=custom_envs:TinyParallel`` and ``env=gymnasium
env.factory=custom_envs:TinyGym`` (pytest puts tests/ on sys.path).

Both raise on an action their mask forbids, so a test that steps them through the framework
proves the masks were respected end to end.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


class TinyParallel(ParallelEnv):
    """A scout sees a hidden target (0..2) and a runner must name it; both must say it together.

    Agents differ: the scout observes ``{"observation": [one-hot target, t], "action_mask"}`` with 4
    actions of which the last is never allowed; the runner observes ``[t]`` and has 3 actions.
    Both naming the target ends the task (termination, reward 1); else after ``max_steps`` steps
    every agent is truncated. The global state is ``[one-hot target, t]``.
    """

    metadata = {"name": "tiny_parallel_v0"}

    def __init__(self, max_steps: int = 8) -> None:
        self.max_steps = max_steps
        self.possible_agents = ["scout", "runner"]
        self.agents: list[str] = []
        self._spaces = {
            "scout": spaces.Dict({"observation": spaces.Box(0.0, 1.0, (4,), np.float32),
                                  "action_mask": spaces.Box(0, 1, (4,), np.int8)}),
            "runner": spaces.Box(0.0, 1.0, (1,), np.float32),
        }
        self.state_space = spaces.Box(0.0, 1.0, (4,), np.float32)
        self.np_random = np.random.default_rng()
        self.target, self.t = 0, 0

    def observation_space(self, agent: str) -> spaces.Space:
        return self._spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return spaces.Discrete(4 if agent == "scout" else 3)

    def state(self) -> np.ndarray:
        s = np.zeros(4, dtype=np.float32)
        s[self.target] = 1.0
        s[3] = self.t / self.max_steps
        return s

    def _obs(self) -> dict[str, Any]:
        time = np.array([self.t / self.max_steps], dtype=np.float32)
        return {"scout": {"observation": self.state(), "action_mask": np.array([1, 1, 1, 0], np.int8)},
                "runner": time}

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self.np_random = np.random.default_rng(seed)
        self.target, self.t = int(self.np_random.integers(3)), 0
        self.agents = self.possible_agents[:]
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        if actions["scout"] == 3:
            raise ValueError("the scout chose its masked action 3")
        self.t += 1
        success = actions["scout"] == self.target and actions["runner"] == self.target
        reward = 1.0 if success else 0.0
        terms = {a: success for a in self.agents}
        truncs = {a: not success and self.t >= self.max_steps for a in self.agents}
        obs = self._obs()
        if success or self.t >= self.max_steps:
            self.agents = []
        return obs, {"scout": reward, "runner": reward}, terms, truncs, {"scout": {}, "runner": {}}


class TinyGym(gymnasium.Env):
    """Two agents push a counter from a random start up to 4 (termination); action 1 pushes, 0
    waits, 2 pulls back, which agent 1 may never do (``info["action_mask"]``). Per-agent rewards
    (-0.1 per step each, +1 each on reaching 4); ``max_steps`` is the env's own time limit, reported
    as ``truncated``. No global state."""

    def __init__(self, max_steps: int = 10) -> None:
        self.max_steps = max_steps
        self.action_space = spaces.Tuple((spaces.Discrete(3), spaces.Discrete(3)))
        box = spaces.Box(0.0, 1.0, (2,), np.float32)
        self.observation_space = spaces.Tuple((box, box))
        self.counter, self.t = 0, 0

    def _obs(self) -> tuple[np.ndarray, np.ndarray]:
        o = np.array([self.counter / 4, self.t / self.max_steps], dtype=np.float32)
        return o, o.copy()

    def _info(self) -> dict[str, Any]:
        return {"action_mask": [[1, 1, 1], [1, 1, 0]]}

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.counter, self.t = int(self.np_random.integers(0, 3)), 0
        return self._obs(), self._info()

    def step(self, actions: list[int]) -> tuple[Any, list[float], bool, bool, dict]:
        if actions[1] == 2:
            raise ValueError("agent 1 chose its masked action 2")
        self.t += 1
        self.counter = int(np.clip(self.counter + sum(1 if a == 1 else -1 if a == 2 else 0 for a in actions), 0, 4))
        done = self.counter == 4
        reward = [-0.1 + done, -0.1 + done]
        return self._obs(), reward, done, not done and self.t >= self.max_steps, self._info()
