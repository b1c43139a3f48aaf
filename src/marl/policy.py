"""The agents' shared policy: input construction around an agent network, and action selection.

Inputs are PyMARL's: the observation, the one-hot of the agent's previous action (zeros at the
first step) and the agent's id one-hot. The same :meth:`Policy.forward` serves acting (one step,
carrying the hidden state) and learning (whole padded episodes from their first step, so the RNN
is reset at episode starts only, docs/architecture.md, invariant 4).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from marl.envs.base import EnvSpec
from marl.registry import AGENTS


class Policy(nn.Module):
    def __init__(self, spec: EnvSpec, agent_cfg: Any) -> None:
        super().__init__()
        self.n_agents, self.n_actions = spec.n_agents, spec.n_actions
        self.obs_last_action = bool(agent_cfg.obs_last_action)
        self.obs_agent_id = bool(agent_cfg.obs_agent_id)
        input_dim = spec.obs_dim + self.n_actions * self.obs_last_action + self.n_agents * self.obs_agent_id
        self.agent = AGENTS.build(agent_cfg, input_dim=input_dim, n_actions=self.n_actions)
        # Row n_actions is the "no previous action" code used at episode starts.
        self.register_buffer("action_codes", torch.cat([torch.eye(self.n_actions), torch.zeros(1, self.n_actions)]),
                             persistent=False)
        self.register_buffer("agent_ids", torch.eye(self.n_agents), persistent=False)

    def initial_hidden(self, batch: int, device: torch.device) -> torch.Tensor:
        return self.agent.initial_hidden(batch * self.n_agents, device)

    def inputs(self, obs: torch.Tensor, last_actions: torch.Tensor) -> torch.Tensor:
        """obs [B, T, n, obs_dim], last_actions [B, T, n] (n_actions = none) -> [B, T, n, in]."""
        parts = [obs]
        if self.obs_last_action:
            parts.append(self.action_codes[last_actions])
        if self.obs_agent_id:
            parts.append(self.agent_ids.expand(*obs.shape[:2], -1, -1))
        return torch.cat(parts, dim=-1)

    def forward(self, obs: torch.Tensor, last_actions: torch.Tensor,
                hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs [B, T, n, o], last_actions [B, T, n], hidden [B*n, H] -> q [B, T, n, A], hidden."""
        B, T, n = last_actions.shape
        x = self.inputs(obs, last_actions).permute(1, 0, 2, 3).reshape(T, B * n, -1)
        q, hidden = self.agent(x, hidden)
        return q.view(T, B, n, -1).permute(1, 0, 2, 3), hidden

    def q_sequence(self, episodes: dict[str, torch.Tensor]) -> torch.Tensor:
        """Q-values for every step of a batch of episodes (obs slots 0..T) -> [B, T+1, n, A]."""
        actions = episodes["actions"]
        B = actions.shape[0]
        none = torch.full_like(actions[:, :1], self.n_actions)
        last_actions = torch.cat([none, actions], dim=1)
        q, _ = self.forward(episodes["obs"], last_actions, self.initial_hidden(B, actions.device))
        return q


def select_actions(q: torch.Tensor, avail: torch.Tensor, epsilon: float,
                   generator: torch.Generator | None) -> torch.Tensor:
    """ε-greedy over available actions. q, avail [B, n, A] -> actions [B, n] (long)."""
    greedy = q.masked_fill(~avail, -torch.inf).argmax(dim=-1)
    if epsilon <= 0.0:
        return greedy
    # A uniform random score on each available action (0 on the others): its argmax is a uniform
    # draw among the available actions, for every agent of every env in one op.
    scores = torch.rand(avail.shape, generator=generator, device=avail.device) * avail
    explore = torch.rand(avail.shape[:-1], generator=generator, device=avail.device) < epsilon
    return torch.where(explore, scores.argmax(dim=-1), greedy)
