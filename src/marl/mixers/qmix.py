"""QMIX (Rashid et al. 2018), PyMARL's implementation.

Hypernetworks conditioned on the state produce the mixing weights; ``abs`` keeps them
non-negative so that Q_tot is monotonic in every Q_i (tested by autograd in tests/test_mixers.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from marl.config import ComponentConfig
from marl.registry import MIXERS


@dataclass
class QMixConfig(ComponentConfig):
    """``hypernet_layers`` is 1 (a linear hypernetwork) or 2 (with ``hypernet_embed`` hidden).

    ``use_state=False`` is an ablation: the hypernetworks get a constant input instead of the state,
    so the mixing weights, biases and V are learned parameters shared by every state. The mixing
    is still monotonic and nonlinear; what is removed is its dependence on the state, which is how
    one tells whether the state input causes a behaviour (docs/results.md, MPE).
    """

    name: str = "qmix"
    embed_dim: int = 32
    hypernet_layers: int = 2
    hypernet_embed: int = 64
    use_state: bool = True


def _hypernet(state_dim: int, out: int, layers: int, hidden: int) -> nn.Module:
    if layers == 1:
        return nn.Linear(state_dim, out)
    if layers == 2:
        return nn.Sequential(nn.Linear(state_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))
    raise ValueError(f"mixer.hypernet_layers={layers} is invalid: choose 1 or 2")


class QMixer(nn.Module):
    needs_state = True
    out_dim = 1

    def __init__(self, n_agents: int, state_dim: int, cfg: Any) -> None:
        super().__init__()
        self.n_agents, self.embed_dim = n_agents, cfg.embed_dim
        self.needs_state = bool(cfg.use_state)
        state_dim = state_dim if self.needs_state else 1
        self.hyper_w1 = _hypernet(state_dim, cfg.embed_dim * n_agents, cfg.hypernet_layers, cfg.hypernet_embed)
        self.hyper_w2 = _hypernet(state_dim, cfg.embed_dim, cfg.hypernet_layers, cfg.hypernet_embed)
        self.hyper_b1 = nn.Linear(state_dim, cfg.embed_dim)
        self.v = nn.Sequential(nn.Linear(state_dim, cfg.embed_dim), nn.ReLU(inplace=True), nn.Linear(cfg.embed_dim, 1))

    def forward(self, agent_qs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        # The per-sample products are [n_agents x embed] and [embed x 1]: far too small for
        # bmm to pay off, so they are written as broadcast multiply-and-sum (same maths).
        lead = agent_qs.shape[:-1]
        qs = agent_qs.reshape(-1, self.n_agents, 1)
        s = state.reshape(-1, state.shape[-1]) if self.needs_state else qs.new_ones(qs.shape[0], 1)
        w1 = torch.abs(self.hyper_w1(s)).view(-1, self.n_agents, self.embed_dim)
        hidden = F.elu((qs * w1).sum(dim=1) + self.hyper_b1(s))  # [N, embed]
        w2 = torch.abs(self.hyper_w2(s))  # [N, embed]
        q_tot = (hidden * w2).sum(dim=1, keepdim=True) + self.v(s)
        return q_tot.view(*lead, 1)


@MIXERS.register("qmix", config=QMixConfig)
def make_qmix(cfg: Any, n_agents: int, state_dim: int) -> QMixer:
    return QMixer(n_agents, state_dim, cfg)
