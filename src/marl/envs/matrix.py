"""Two-player matrix games as natively batched environments (B games as one tensor op).

* ``two_step``: the QMIX paper's two-step game. In state 1 agent 1's action picks state 2A
  (all payoffs 7) or 2B ([[0,1],[1,8]]); the episode ends after the second step.
* ``climbing`` and ``penalty``: EPyMARL's repeated games, 25 steps of the same matrix.
* ``nonmonotonic``: Weighted QMIX's one-step game [[8,-12,-12],[-12,0,0],[-12,0,0]] that a
  monotonic mixer cannot represent.

Observations and the state are the one-hot of the game's current matrix (a terminal marker of
zeros after the last step). The fixed horizon is the end of the game, so it is ``terminated``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from marl.config import ComponentConfig
from marl.envs.base import EnvSpec, TimeStep
from marl.registry import ENVS


class MatrixGame:
    """A two-player game with ``S`` payoff matrices ``payoffs[S, A, A]``.

    ``next_state[S, A, A]`` gives the matrix played at the next step; the game ends after
    ``horizon`` steps. ``table_states`` names each matrix with the joint-action prefix that
    reaches it, for :mod:`marl.qtable`.
    """

    def __init__(
        self,
        payoffs: list[list[list[float]]],
        next_state: list[list[list[int]]],
        horizon: int,
        table_states: list[tuple[str, list[tuple[int, int]]]],
        num_envs: int,
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.payoffs = torch.tensor(payoffs, dtype=torch.float32, device=self.device)
        self.next_state = torch.tensor(next_state, dtype=torch.long, device=self.device)
        n_states, n_actions, _ = self.payoffs.shape
        self.horizon = horizon
        self.table_states = table_states
        self.num_envs = num_envs
        self.spec = EnvSpec(
            n_agents=2, obs_dim=n_states, state_dim=n_states, n_actions=n_actions,
            episode_limit=horizon, has_state=True, shared_reward=True,
        )
        self.t = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.s = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self._eye = torch.eye(n_states, device=self.device)
        self._avail = torch.ones(num_envs, 2, n_actions, dtype=torch.bool, device=self.device)

    def _timestep(self, reward: torch.Tensor, terminated: torch.Tensor) -> TimeStep:
        state = self._eye[self.s] * (~terminated).unsqueeze(-1)
        return TimeStep(
            obs=state.unsqueeze(1).expand(-1, 2, -1),
            state=state,
            avail=self._avail,
            reward=reward,
            terminated=terminated,
            truncated=torch.zeros_like(terminated),
        )

    def reset(self, mask: torch.Tensor | None = None) -> TimeStep:
        if mask is None:
            self.t.zero_()
            self.s.zero_()
        else:
            self.t.masked_fill_(mask, 0)
            self.s.masked_fill_(mask, 0)
        return self._timestep(torch.zeros(self.num_envs, device=self.device), self.t >= self.horizon)

    def step(self, actions: torch.Tensor) -> TimeStep:
        a0, a1 = actions[:, 0].to(self.device), actions[:, 1].to(self.device)
        reward = self.payoffs[self.s, a0, a1]
        self.s = self.next_state[self.s, a0, a1]
        self.t = self.t + 1
        return self._timestep(reward, self.t >= self.horizon)

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t.clone(), "s": self.s.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = state["t"].to(self.device)
        self.s = state["s"].to(self.device)

    def close(self) -> None:
        pass


def repeated(payoff: list[list[float]], horizon: int, num_envs: int, device: Any) -> MatrixGame:
    n = len(payoff)
    return MatrixGame([payoff], [[[0] * n for _ in range(n)]], horizon, [("matrix", [])], num_envs,
                      device)


@dataclass
class TwoStepConfig(ComponentConfig):
    name: str = "two_step"


@dataclass
class RepeatedGameConfig(ComponentConfig):
    """``episode_limit`` is the number of times the matrix is played (EPyMARL: 25)."""

    episode_limit: int = 25


@dataclass
class PenaltyConfig(RepeatedGameConfig):
    """``k`` is the penalty for miscoordinating on the two optimal joint actions."""

    name: str = "penalty"
    k: float = 100.0


@dataclass
class NonMonotonicConfig(ComponentConfig):
    name: str = "nonmonotonic"


@ENVS.register("two_step", config=TwoStepConfig)
def make_two_step(cfg: Any, num_envs: int, seed: int, device: Any = "cpu") -> MatrixGame:
    zeros, sevens, game_b = [[0.0, 0.0], [0.0, 0.0]], [[7.0, 7.0], [7.0, 7.0]], [[0.0, 1.0], [1.0, 8.0]]
    to_a, to_b, stay = [1, 1], [2, 2], [0, 0]
    return MatrixGame(
        payoffs=[zeros, sevens, game_b],
        next_state=[[to_a, to_b], [stay, stay], [stay, stay]],
        horizon=2,
        table_states=[("state 1", []), ("state 2A", [(0, 0)]), ("state 2B", [(1, 0)])],
        num_envs=num_envs,
        device=device,
    )


@ENVS.register("climbing", config=RepeatedGameConfig)
def make_climbing(cfg: Any, num_envs: int, seed: int, device: Any = "cpu") -> MatrixGame:
    payoff = [[11.0, -30.0, 0.0], [-30.0, 7.0, 0.0], [0.0, 6.0, 5.0]]
    return repeated(payoff, cfg.episode_limit, num_envs, device)


@ENVS.register("penalty", config=PenaltyConfig)
def make_penalty(cfg: Any, num_envs: int, seed: int, device: Any = "cpu") -> MatrixGame:
    k = float(cfg.k)
    payoff = [[-k, 0.0, 10.0], [0.0, 2.0, 0.0], [10.0, 0.0, -k]]
    return repeated(payoff, cfg.episode_limit, num_envs, device)


@ENVS.register("nonmonotonic", config=NonMonotonicConfig)
def make_nonmonotonic(cfg: Any, num_envs: int, seed: int, device: Any = "cpu") -> MatrixGame:
    payoff = [[8.0, -12.0, -12.0], [-12.0, 0.0, 0.0], [-12.0, 0.0, 0.0]]
    return repeated(payoff, 1, num_envs, device)
