"""VDN (Sunehag et al. 2017): Q_tot is the sum of the agents' values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from marl.config import ComponentConfig
from marl.registry import MIXERS


@dataclass
class VDNConfig(ComponentConfig):
    name: str = "vdn"


class VDNMixer(nn.Module):
    needs_state = False
    out_dim = 1

    def forward(self, agent_qs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return agent_qs.sum(dim=-1, keepdim=True)


@MIXERS.register("vdn", config=VDNConfig)
def make_vdn(cfg: Any, n_agents: int, state_dim: int) -> VDNMixer:
    return VDNMixer()
