"""Feed-forward agent (EPyMARL's ``mlp``): no memory, hidden state passes through unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from marl.agents import AgentConfig
from marl.registry import AGENTS


@dataclass
class MLPAgentConfig(AgentConfig):
    """``n_layers`` hidden layers of ``hidden_dim`` units with ReLU."""

    name: str = "mlp"
    n_layers: int = 2


class MLPAgent(nn.Module):
    def __init__(self, input_dim: int, n_actions: int, hidden_dim: int, n_layers: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden_dim), nn.ReLU(inplace=True)]
            width = hidden_dim
        layers.append(nn.Linear(width, n_actions))
        self.net = nn.Sequential(*layers)

    def initial_hidden(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.zeros(n, 0, device=device)

    def forward(self, inputs: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(inputs), hidden


@AGENTS.register("mlp", config=MLPAgentConfig)
def make_mlp(cfg: Any, input_dim: int, n_actions: int) -> MLPAgent:
    return MLPAgent(input_dim, n_actions, cfg.hidden_dim, cfg.n_layers)
