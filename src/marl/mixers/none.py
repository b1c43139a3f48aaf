"""No mixing: independent Q-learning. Each agent regresses its own value on the team reward."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from marl.config import ComponentConfig
from marl.registry import MIXERS


@dataclass
class NoMixerConfig(ComponentConfig):
    name: str = "none"


class NoMixer(nn.Module):
    needs_state = False

    def __init__(self, n_agents: int) -> None:
        super().__init__()
        self.out_dim = n_agents

    def forward(self, agent_qs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return agent_qs


@MIXERS.register("none", config=NoMixerConfig)
def make_none(cfg: Any, n_agents: int, state_dim: int) -> NoMixer:
    return NoMixer(n_agents)
