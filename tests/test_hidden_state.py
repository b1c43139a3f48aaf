"""Hidden state and done align (docs/architecture.md, invariant 4), on hand-computed episodes.

The agent is replaced by a counter: its hidden state is the number of steps it has seen since
its last reset, and its Q-values are that count. Two envs with episodes of 2 and 3 steps then
give hidden states that can be written down by hand, both while acting (the runner zeroes the
rows of exactly the envs whose episode ended, and no others) and while learning (every sampled
episode is unrolled from a fresh hidden state at its first step, wherever it sits in the batch).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from marl.buffers import allocate
from marl.envs.base import EnvSpec, TimeStep
from marl.policy import Policy
from marl.runner import Runner

N_AGENTS, N_ACTIONS = 2, 2
LENGTHS = (2, 3)  # env 0 ends every 2 steps, env 1 every 3 (terminated)
SPEC = EnvSpec(n_agents=N_AGENTS, obs_dim=1, state_dim=1, n_actions=N_ACTIONS, episode_limit=4)


class Counter(nn.Module):
    """An "agent" whose hidden state counts its steps: h' = h + 1, Q = h' for every action."""

    def initial_hidden(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.zeros(n, 1, device=device)

    def forward(self, inputs: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        qs = []
        for _ in range(inputs.shape[0]):
            hidden = hidden + 1
            qs.append(hidden.expand(-1, N_ACTIONS))
        return torch.stack(qs), hidden


class FixedLengthEnvs:
    """B envs whose episodes always last ``LENGTHS[b]`` steps and end as terminated."""

    spec = SPEC
    num_envs = len(LENGTHS)

    def __init__(self) -> None:
        self.t = torch.zeros(self.num_envs, dtype=torch.long)
        self.lengths = torch.tensor(LENGTHS)

    def _ts(self, terminated: torch.Tensor) -> TimeStep:
        B = self.num_envs
        return TimeStep(obs=self.t.float().view(B, 1, 1).expand(B, N_AGENTS, 1).clone(),
                        state=self.t.float().view(B, 1), avail=torch.ones(B, N_AGENTS, N_ACTIONS, dtype=torch.bool),
                        reward=torch.zeros(B), terminated=terminated, truncated=torch.zeros(B, dtype=torch.bool))

    def reset(self, mask: torch.Tensor | None = None) -> TimeStep:
        self.t = torch.zeros_like(self.t) if mask is None else self.t.masked_fill(mask, 0)
        return self._ts(torch.zeros(self.num_envs, dtype=torch.bool))

    def step(self, actions: torch.Tensor) -> TimeStep:
        self.t = self.t + 1
        return self._ts(self.t >= self.lengths)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def counting_policy() -> Policy:
    cfg = SimpleNamespace(name="mlp", hidden_dim=4, n_layers=1, obs_last_action=True, obs_agent_id=True)
    policy = Policy(SPEC, cfg)
    policy.agent = Counter()
    return policy


def test_acting_resets_the_hidden_state_of_finished_envs_only():
    runner = Runner(FixedLengthEnvs(), counting_policy(), torch.device("cpu"), torch.Generator().manual_seed(0))
    # Hidden state after each of 6 steps, per env (both agents alike). An env's rows are zeroed
    # right after the step that ends its episode, so the next step starts counting from 1 again.
    want = [(1, 1), (0, 2), (1, 0), (0, 1), (1, 2), (0, 0)]
    ended = [(False, False), (True, False), (False, True), (True, False), (False, False), (True, True)]
    for step, (hidden, done) in enumerate(zip(want, ended)):
        res = runner.step(epsilon=0.0)
        got = runner.hidden.view(len(LENGTHS), N_AGENTS)
        assert torch.equal(got, torch.tensor(hidden, dtype=torch.float).unsqueeze(1).expand(-1, N_AGENTS)), step
        finished = res.finished if res.finished is not None else torch.zeros(len(LENGTHS), dtype=torch.bool)
        assert finished.tolist() == list(done), step
        if res.episodes is not None:  # whole episodes: as many filled steps as the env's length
            assert res.lengths.tolist() == [LENGTHS[b] for b in range(len(LENGTHS)) if done[b]]
            assert res.episodes["filled"].sum(1).tolist() == res.lengths.tolist()


def test_learning_unrolls_every_episode_from_a_fresh_hidden_state():
    policy = counting_policy()
    batch = allocate(SPEC, 3)
    for b, length in enumerate((4, 1, 2)):  # padded episodes of different lengths
        batch["filled"][b, :length] = True
    q = policy.q_sequence(batch)  # [B, T+1, n, A]
    # Step t of every episode is the (t+1)-th step its agents see: the count never carries over
    # from another episode of the batch, nor from acting.
    want = torch.arange(1, SPEC.episode_limit + 2, dtype=torch.float).view(1, -1, 1, 1).expand_as(q)
    assert torch.equal(q, want)
