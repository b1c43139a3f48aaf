"""PyMARL's recurrent agent: Linear-ReLU, GRU, Linear.

The GRU is an ``nn.GRU`` rather than PyMARL's ``GRUCell`` so that the learner unrolls whole
padded sequences in one call: on the CPU through :func:`marl.agents.gru_sequence.gru_sequence`
(the same weights and maths, fused forward and backward, ~2x faster than ``nn.GRU`` there; where
no C++ compiler can build it, ``nn.GRU`` with a warning), on CUDA through ``nn.GRU`` (cuDNN).
Acting runs one step of the same weights through ``gru_cell``. tests/test_learner_reference.py
checks all paths against PyMARL's step loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from marl.agents import AgentConfig
from marl.agents import gru_sequence
from marl.registry import AGENTS


@dataclass
class RNNAgentConfig(AgentConfig):
    name: str = "rnn"


class RNNAgent(nn.Module):
    def __init__(self, input_dim: int, n_actions: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.rnn = nn.GRU(hidden_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, n_actions)
        self.vmappable = False  # True inside torch.func.vmap (a vectorised learner's template)

    def _unrolled(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The GRU step by step in plain torch ops (``torch.gru_cell``'s maths): what
        ``torch.func.vmap`` batches over members where the fused kernel does not apply (acting,
        CUDA, no compiler)."""
        rnn = self.rnn
        gates_x = nn.functional.linear(x, rnn.weight_ih_l0, rnn.bias_ih_l0)  # all steps at once
        out = []
        for t in range(x.shape[0]):
            x_r, x_z, x_n = gates_x[t].chunk(3, dim=-1)
            h_r, h_z, h_n = nn.functional.linear(h, rnn.weight_hh_l0, rnn.bias_hh_l0).chunk(3, dim=-1)
            r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + r * h_n)
            h = n + z * (h - n)
            out.append(h)
        return torch.stack(out)

    def initial_hidden(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.zeros(n, self.hidden_dim, device=device)

    def forward(self, inputs: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs [T, N, input_dim], hidden [N, H] -> (q [T, N, n_actions], hidden [N, H])."""
        x = torch.relu_(self.fc1(inputs))  # in place: one fewer fresh [T, N, H] tensor
        if x.shape[0] == 1 and not self.vmappable:  # acting: the cell maths without nn.GRU's set-up
            rnn = self.rnn
            h = torch.gru_cell(x[0], hidden, rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
            return self.fc2(h).unsqueeze(0), h
        if x.shape[0] > 1 and x.device.type == "cpu" and x.dtype == torch.float32 and gru_sequence.available():
            out = gru_sequence.gru_sequence(self.rnn, x, hidden)  # fused; under vmap once per member
            return self.fc2(out), out[-1]
        if self.vmappable:  # neither nn.GRU nor gru_cell has a vmap batching rule
            out = self._unrolled(x, hidden)
            return self.fc2(out), out[-1]
        self.rnn.flatten_parameters()  # cuDNN wants one weight buffer; copies and loads break it up
        out, h = self.rnn(x, hidden.unsqueeze(0))
        return self.fc2(out), h.squeeze(0)


@AGENTS.register("rnn", config=RNNAgentConfig)
def make_rnn(cfg: Any, input_dim: int, n_actions: int) -> RNNAgent:
    return RNNAgent(input_dim, n_actions, cfg.hidden_dim)
