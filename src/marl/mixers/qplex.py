"""QPLEX (Wang et al., ICLR 2021): duplex dueling mixing, ``qplex``.

Each agent's value is split into V_i = max over its available actions of Q_i and the advantage
A_i = Q_i(a_i) - V_i <= 0; both are transformed by state-conditioned positive weights and biases
(V'_i = w_i(s) V_i + b_i(s), A'_i = w_i(s) A_i), and the advantages are mixed with positive
weights λ_i(s, a) that depend on the joint action:

    Q_tot(s, a) = Σ_i V'_i + Σ_i λ_i(s, a) A'_i,   λ_i = Σ_k |key_k(s)| σ(agent_k(s))_i σ(action_k(s, a))_i

computed, as the authors' code does, as Σ_i (w_i Q_i(a_i) + b_i) + Σ_i (λ_i - 1) A'_i with the
advantage term's A' held constant (no gradient into the agents through it). IGM holds by
construction: at the agents' greedy actions every A_i is 0 and Q_tot = Σ V'_i; any other joint
action has some A_i < 0 and a smaller Q_tot (tested in tests/test_mixers.py).

The reference is pymarl2's src/modules/mixers/dmaq_general.py and dmaq_si_weight.py (from
wjh720/QPLEX), with its defaults ``is_minus_one``, ``weighted_head`` and ``is_stop_gradient``
on, the only form offered here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from marl.config import ComponentConfig
from marl.errors import ConfigError
from marl.mixers import MixerInput, MixerOutput
from marl.registry import MIXERS


@dataclass
class QPlexConfig(ComponentConfig):
    """``hypernet_embed``: hidden units of w(s) and b(s); ``num_kernel`` attention heads of λ, each
    three extractors (key, agents, action) of ``adv_hypernet_layers`` layers (1, 2 or 3) with
    ``adv_hypernet_embed`` hidden units."""

    name: str = "qplex"
    hypernet_embed: int = 64
    adv_hypernet_layers: int = 3
    adv_hypernet_embed: int = 64
    num_kernel: int = 10


class Heads(nn.Module):
    """``heads`` independent MLPs [N, inp] -> [heads, N, out] (``layers`` Linear layers, ``hidden``
    units, ReLU between), evaluated as one batched matmul per layer. Each head is initialised as
    ``nn.Linear`` would be: weights and biases uniform in ±1/sqrt(fan_in)."""

    def __init__(self, heads: int, inp: int, out: int, layers: int, hidden: int) -> None:
        super().__init__()
        dims = [inp] + [hidden] * (layers - 1) + [out]
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(heads, a, b)) for a, b in zip(dims[:-1], dims[1:]))
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(heads, 1, b)) for b in dims[1:])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for w, b in zip(self.weights, self.biases):
            bound = 1.0 / math.sqrt(w.shape[1])
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.matmul(h, w) + b  # [N, a] @ [K, a, b] broadcasts to [K, N, b]
            if i < len(self.weights) - 1:
                h = torch.relu(h)
        return h


class AdvantageWeights(nn.Module):
    """λ_i(s, a) > 0 [N, n] from the state [N, s] and the joint action's one-hots [N, n*A]: per head
    k, a key |key_k(s)| (one value), agent weights σ(agents_k(s)) and action weights
    σ(actions_k(s, a)) (one per agent), multiplied and summed over the heads (pymarl2's
    dmaq_si_weight.py, DMAQ_SI_Weight)."""

    def __init__(self, n_agents: int, n_actions: int, state_dim: int, layers: int, hidden: int, heads: int) -> None:
        super().__init__()
        self.keys = Heads(heads, state_dim, 1, layers, hidden)
        self.agents = Heads(heads, state_dim, n_agents, layers, hidden)
        self.actions = Heads(heads, state_dim + n_agents * n_actions, n_agents, layers, hidden)

    def forward(self, state: torch.Tensor, joint_actions: torch.Tensor) -> torch.Tensor:
        data = torch.cat([state, joint_actions], dim=-1)
        lam = (self.keys(state).abs() + 1e-10) * torch.sigmoid(self.agents(state)) * torch.sigmoid(self.actions(data))
        return lam.sum(dim=0)


class QPlexMixer(nn.Module):
    needs_state = True
    out_dim = 1
    takes_mixer_input = True

    def __init__(self, n_agents: int, state_dim: int, cfg: Any) -> None:
        super().__init__()
        self.n_agents, self.state_dim = n_agents, state_dim
        self.lam_shape = (int(cfg.adv_hypernet_layers), int(cfg.adv_hypernet_embed), int(cfg.num_kernel))
        hidden = cfg.hypernet_embed
        self.w = nn.Sequential(nn.Linear(state_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n_agents))
        self.b = nn.Sequential(nn.Linear(state_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n_agents))
        self.lam: AdvantageWeights | None = None  # needs the number of actions: see bind

    def bind(self, policy: nn.Module) -> None:
        """λ reads the joint action's one-hots, so it is built once the number of actions is known."""
        self.lam = AdvantageWeights(self.n_agents, policy.n_actions, self.state_dim, *self.lam_shape)

    def forward(self, x: MixerInput) -> MixerOutput:
        if self.lam is None:
            raise RuntimeError("QPlexMixer.bind(policy) builds λ; the Learner calls it")
        lead, n, A = x.chosen.shape[:-1], self.n_agents, x.q_all.shape[-1]
        s = x.state.reshape(-1, self.state_dim)
        q = x.chosen.reshape(-1, n)
        v = x.q_all.detach().masked_fill(~x.avail, -torch.inf).amax(dim=-1).reshape(-1, n)  # V_i
        w = self.w(s).abs() + 1e-10
        adv = (w * (q - v)).detach()  # A'_i <= 0
        one_hot = (x.actions.unsqueeze(-1) == torch.arange(A, device=s.device)).to(s.dtype)  # vmap-safe
        lam = self.lam(s, one_hot.reshape(-1, n * A))
        q_tot = (w * q + self.b(s)).sum(dim=-1) + (adv * (lam - 1.0)).sum(dim=-1)
        return MixerOutput(q_tot.view(*lead, 1))


@MIXERS.register("qplex", config=QPlexConfig)
def make_qplex(cfg: Any, n_agents: int, state_dim: int) -> QPlexMixer:
    if cfg.adv_hypernet_layers not in (1, 2, 3):
        raise ConfigError(f"mixer.adv_hypernet_layers={cfg.adv_hypernet_layers!r} is invalid: choose 1, 2 or 3")
    for key in ("hypernet_embed", "adv_hypernet_embed", "num_kernel"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"mixer.{key}={getattr(cfg, key)!r} is invalid: must be >= 1")
    return QPlexMixer(n_agents, state_dim, cfg)
