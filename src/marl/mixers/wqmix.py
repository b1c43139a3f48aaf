"""Weighted QMIX (Rashid et al., NeurIPS 2020): ``ow_qmix`` and ``cw_qmix``.

QMIX's monotonic Q_tot, which the agents act on, is fitted to the targets of an unrestricted joint
value Q* with a weighted loss, so that the fit is right at the best joint action even where the
payoff is not monotonic. Everything the algorithm adds lives in this mixer, so that the learner's
target copy of the mixer is Q*'s target network too:

* Q*(s, a) = f([s, Q^c_1(a_1), ..., Q^c_n(a_n)]) + V(s): agent networks of its own (``Q^c``, a
  freshly initialised copy of the policy's, built in :meth:`WQMixer.bind`) and a feed-forward
  network that is not monotonic (``central_layers`` hidden layers of ``central_embed_dim``, ReLU).
* Targets (the target call): y = r + γ Q*'(s', ū'), ū' the actions the learner bootstraps from
  (with double Q the greedy actions of QMIX's agents).
* Losses (the online call): Σ w (Q_tot(s, a) - y)² / N, through the learner's ``td_weight``, plus
  ``central_loss`` · Σ (Q*(s, a) - y)² / N (``loss_central``).
* Weights w ∈ {α, 1}: OW-QMIX (optimistic) puts 1 where Q_tot(s, a) < y, the joint actions that
  QMIX underestimates; CW-QMIX (centrally weighted) puts 1 where a is the greedy joint action ū or
  y > Q*'(s, ū), the joint actions better than what QMIX would pick; α everywhere else.

pymarl2's src/learners/max_q_learner.py and oxwhirl/wqmix's are the reference for the details.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from marl.errors import ConfigError
from marl.mixers import MixerInput, MixerOutput, fresh_copy
from marl.mixers.qmix import QMixConfig, QMixer
from marl.registry import MIXERS


@dataclass
class WQMixConfig(QMixConfig):
    """``embed_dim``, ``hypernet_layers`` and ``hypernet_embed`` are QMIX's (the monotonic Q_tot).

    ``alpha`` is the paper's α, the weight of the joint actions that the weighting does not favour
    (in (0, 1]; 1 is plain QMIX's loss with Q*'s targets); ``central_embed_dim`` and
    ``central_layers`` shape Q*'s feed-forward network; ``central_loss`` weights Q*'s own loss.
    """

    alpha: float = 0.1
    central_embed_dim: int = 256
    central_layers: int = 3
    central_loss: float = 1.0


@dataclass
class OWQMixConfig(WQMixConfig):
    name: str = "ow_qmix"


@dataclass
class CWQMixConfig(WQMixConfig):
    name: str = "cw_qmix"


class JointValue(nn.Module):
    """Q*'s network: [s, Q^c_i(a_i)] -> hidden layers (ReLU) -> 1, plus V(s) (pymarl2's
    src/modules/mixers/qmix_central_no_hyper.py, QMixerCentralFF)."""

    def __init__(self, n_agents: int, state_dim: int, embed: int, layers: int) -> None:
        super().__init__()
        width, body = state_dim + n_agents, []
        for _ in range(layers):
            body += [nn.Linear(width, embed), nn.ReLU(inplace=True)]
            width = embed
        self.net = nn.Sequential(*body, nn.Linear(width, 1))
        self.v = nn.Sequential(nn.Linear(state_dim, embed), nn.ReLU(inplace=True), nn.Linear(embed, 1))

    def forward(self, agent_qs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """agent_qs [..., n], state [..., s] -> [..., 1]"""
        return self.net(torch.cat([state, agent_qs], dim=-1)) + self.v(state)


def optimistic_weights(q_tot: torch.Tensor, targets: torch.Tensor, alpha: float) -> torch.Tensor:
    """OW-QMIX: 1 where Q_tot < y (the TD error is negative), α elsewhere. All [B, T, 1]."""
    return torch.full_like(targets, alpha).masked_fill(q_tot < targets, 1.0)


def central_weights(is_greedy: torch.Tensor, targets: torch.Tensor, greedy_value: torch.Tensor,
                    alpha: float) -> torch.Tensor:
    """CW-QMIX: 1 where the joint action is the greedy one (``is_greedy`` [B, T, 1] bool) or
    y > Q*'(s, ū) (``greedy_value``), α elsewhere. All [B, T, 1]."""
    return torch.full_like(targets, alpha).masked_fill(is_greedy | (targets > greedy_value), 1.0)


class WQMixer(nn.Module):
    needs_state = True
    out_dim = 1
    takes_mixer_input = True

    def __init__(self, n_agents: int, state_dim: int, cfg: Any, centrally_weighted: bool) -> None:
        super().__init__()
        self.qmix = QMixer(n_agents, state_dim, cfg)
        self.joint = JointValue(n_agents, state_dim, cfg.central_embed_dim, cfg.central_layers)
        self.central_agents: nn.Module | None = None  # Q*'s agent networks: see bind
        self.alpha, self.central_loss = float(cfg.alpha), float(cfg.central_loss)
        self.centrally_weighted = centrally_weighted

    def bind(self, policy: nn.Module) -> None:
        """Q*'s agents: the policy's architecture and inputs, initialised afresh, not shared
        (pymarl2's basic_central_mac with central_rnn, 64 units: the rnn agent's shape)."""
        self.central_agents = fresh_copy(policy)

    def star(self, episodes: dict[str, torch.Tensor], actions: torch.Tensor, state: torch.Tensor,
             next_step: bool) -> torch.Tensor:
        """Q*(s, a) [B, T, 1] of ``actions`` [B, T, n] at steps 0..T-1, or 1..T with ``next_step``."""
        if self.central_agents is None:
            raise RuntimeError("WQMixer.bind(policy) builds Q*'s agents; the Learner calls it")
        q = self.central_agents.q_sequence(episodes)  # [B, T+1, n, A]
        q = q[:, 1:] if next_step else q[:, :-1]
        return self.joint(q.gather(-1, actions.unsqueeze(-1)).squeeze(-1), state)

    def forward(self, x: MixerInput) -> MixerOutput:
        if x.next_step:  # the target network's value of the bootstrap actions: Q*'
            return MixerOutput(self.star(x.episodes, x.actions, x.state, next_step=True))
        q_tot = self.qmix(x.chosen, x.state)
        if x.targets is None:
            return MixerOutput(q_tot)
        y, mask = x.targets, x.mask
        q_star = self.star(x.episodes, x.actions, x.state, next_step=False)
        central = (((q_star - y) * mask) ** 2).sum() / mask.sum()
        with torch.no_grad():
            if self.centrally_weighted:
                is_greedy = (x.actions == x.greedy).all(dim=-1, keepdim=True)
                greedy_value = x.target_mixer.star(x.episodes, x.greedy, x.state, next_step=False)
                weight = central_weights(is_greedy, y, greedy_value, self.alpha)
            else:
                weight = optimistic_weights(q_tot, y, self.alpha)
        return MixerOutput(q_tot, td_weight=weight, losses={"central": self.central_loss * central})


def _check(cfg: Any) -> None:
    if not 0.0 < cfg.alpha <= 1.0:
        raise ConfigError(f"mixer.alpha={cfg.alpha!r} is invalid: must be in (0, 1]")
    for key in ("central_embed_dim", "central_layers"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"mixer.{key}={getattr(cfg, key)!r} is invalid: must be >= 1")
    if cfg.central_loss < 0:
        raise ConfigError(f"mixer.central_loss={cfg.central_loss!r} is invalid: must be >= 0")


def _factory(centrally_weighted: bool) -> Callable[..., WQMixer]:
    def make(cfg: Any, n_agents: int, state_dim: int) -> WQMixer:
        _check(cfg)
        return WQMixer(n_agents, state_dim, cfg, centrally_weighted)

    return make


make_ow_qmix = MIXERS.register("ow_qmix", config=OWQMixConfig)(_factory(centrally_weighted=False))
make_cw_qmix = MIXERS.register("cw_qmix", config=CWQMixConfig)(_factory(centrally_weighted=True))
