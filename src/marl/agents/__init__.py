"""Agent networks. Each maps a sequence of inputs [T, N, input_dim] to Q-values [T, N, n_actions].

N is batch x agents: parameters are shared between agents, which tell themselves apart by the
agent-id one-hot in their inputs (see :mod:`marl.policy`).
"""

from __future__ import annotations

from dataclasses import dataclass

from marl.config import ComponentConfig


@dataclass
class AgentConfig(ComponentConfig):
    """Shared by every agent: network width and which extras go into the inputs."""

    hidden_dim: int = 64
    obs_last_action: bool = True
    obs_agent_id: bool = True
