"""The one Q-learner shared by ``qmix``, ``vdn`` and ``none`` (PyMARL's q_learner, vectorised).

One update, read top to bottom:

1. Q_i for every step of every sampled episode: the agent runs over whole padded sequences.
2. Q_tot = mixer(Q_i(a_t), s_t) for all steps at once.
3. Targets from the target networks at t+1: double Q picks the argmax with the online network,
   among the available actions; ``terminated`` stops bootstrapping, truncation does not
   (docs/architecture.md, invariant 3); TD(λ) blends n-step returns when ``td_lambda > 0``.
4. Masked MSE over real steps (``filled``), gradient clipping, a finiteness check of the loss,
   the gradient norm and the Q-values (invariant 8), one optimiser step.

The mixer's ``out_dim`` columns are all regression targets, so independent learners (``none``,
one column per agent) need no special case.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from marl.buffers import Episodes
from marl.config import Optimizer
from marl.errors import NonFiniteError
from marl.policy import Policy
from marl.reward_scaling import RunningMeanStd


def lambda_returns(reward: torch.Tensor, terminated: torch.Tensor, filled: torch.Tensor,
                   next_values: torch.Tensor, gamma: float, td_lambda: float) -> torch.Tensor:
    """Targets y_t for t < T. reward/terminated/filled [B, T], next_values [B, T, k] = V'(s_{t+1}).

    y_t = r_t + γ (1 - term_t) [(1 - λ) V'(s_{t+1}) + λ y_{t+1}], where y_{t+1} is replaced by
    V'(s_{t+1}) after the last real step (a truncated episode bootstraps from its final obs).
    λ = 0 is the one-step target.
    """
    r = reward.unsqueeze(-1)
    cont = gamma * (~terminated).unsqueeze(-1).to(next_values.dtype)
    if td_lambda == 0.0:
        return r + cont * next_values
    T = reward.shape[1]
    y = torch.empty_like(next_values)
    after = next_values[:, -1]
    for t in range(T - 1, -1, -1):
        y[:, t] = r[:, t] + cont[:, t] * after
        if t > 0:
            more = filled[:, t].unsqueeze(-1)  # step t is real, so y_t may feed y_{t-1}
            after = torch.where(more, (1 - td_lambda) * next_values[:, t - 1] + td_lambda * y[:, t],
                                next_values[:, t - 1])
    return y


FINITE_STATS = ("loss", "grad_norm", "q_taken_mean", "target_mean")


def check_finite(stats: dict[str, torch.Tensor]) -> None:
    """Raise :class:`NonFiniteError` naming each of :data:`FINITE_STATS` that is NaN or infinite.

    One fused check and one host read per update: nothing on CPU, and on CUDA the acting step
    that follows synchronises anyway. Argmax over NaN Q-values picks action 0, so a run that went
    on would still "evaluate" (on the climbing game, to the optimum 275).
    """
    values = torch.stack([stats[k].float() for k in FINITE_STATS])
    if bool(torch.isfinite(values).all()):
        return
    bad = ", ".join(f"{k}={v:g}" for k, v in zip(FINITE_STATS, values.tolist()) if not math.isfinite(v))
    raise NonFiniteError(f"non-finite {bad}")


class Learner:
    def __init__(self, policy: Policy, mixer: nn.Module, cfg: Any, device: torch.device,
                 check_finite: bool = True) -> None:
        self.check_finite = check_finite
        # A plain dataclass copy: attribute access on an OmegaConf node costs microseconds per read.
        self.cfg = OmegaConf.to_object(cfg) if isinstance(cfg, DictConfig) else cfg
        self.policy, self.mixer = policy.to(device), mixer.to(device)
        self.target_policy = copy.deepcopy(self.policy).requires_grad_(False)
        self.target_mixer = copy.deepcopy(self.mixer).requires_grad_(False)
        self.params = list(self.policy.parameters()) + list(self.mixer.parameters())
        if Optimizer(cfg.optimizer) is Optimizer.rmsprop:
            self.optimizer: torch.optim.Optimizer = torch.optim.RMSprop(
                self.params, lr=cfg.lr, alpha=cfg.rmsprop_alpha, eps=cfg.optim_eps, foreach=True)
        else:
            self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr, eps=cfg.optim_eps, foreach=True)
        self.device = device
        # EPyMARL's reward standardisation (marl.reward_scaling): one statistic of the team reward.
        self.reward_scaling = (RunningMeanStd(device=device)
                               if getattr(self.cfg, "standardise_rewards", False) else None)

    def loss(self, batch: Episodes) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The masked TD loss of one batch of episodes, and statistics for logging.

        With ``standardise_rewards`` the batch's real steps first update the running reward
        statistics, then its rewards are standardised before the targets are computed (EPyMARL's
        QLearner.train); padded steps neither update them nor reach the loss.
        """
        actions, filled = batch["actions"], batch["filled"]
        reward = batch["reward"]
        if self.reward_scaling is not None:
            self.reward_scaling.update(reward, filled)
            reward = torch.where(filled, self.reward_scaling.normalise(reward), 0.0)
        avail = batch["avail"][:, 1:]
        avail = avail | ~avail.any(dim=-1, keepdim=True)  # no action left (e.g. dead): any will do
        q = self.policy.q_sequence(batch)  # [B, T+1, n, A]
        chosen = q[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        q_tot = self.mixer(chosen, batch["state"][:, :-1])  # [B, T, k]
        with torch.no_grad():
            target_q = self.target_policy.q_sequence(batch)[:, 1:]
            pick_from = q[:, 1:].detach() if self.cfg.double_q else target_q
            best = pick_from.masked_fill(~avail, -torch.inf).argmax(dim=-1, keepdim=True)
            next_values = self.target_mixer(target_q.gather(-1, best).squeeze(-1), batch["state"][:, 1:])
            y = lambda_returns(reward, batch["terminated"], filled, next_values,
                               self.cfg.gamma, self.cfg.td_lambda)
        mask = filled.unsqueeze(-1).expand_as(q_tot).to(q_tot.dtype)
        td = (q_tot - y) * mask
        n = mask.sum()
        loss = (td**2).sum() / n
        stats = {"loss": loss.detach(), "td_abs": td.abs().sum().detach() / n,
                 "q_taken_mean": (q_tot.detach() * mask).sum() / n, "target_mean": (y * mask).sum() / n}
        return loss, stats

    def update(self, batch: Episodes) -> dict[str, torch.Tensor]:
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        loss, stats = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        stats["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip).detach()
        if self.check_finite:
            check_finite(stats)  # before the step: a diverged update never reaches the weights
        self.optimizer.step()
        return stats

    @torch.no_grad()
    def update_targets(self) -> None:
        """target <- τ·online + (1-τ)·target; τ = 1 is PyMARL's hard copy."""
        tau = float(self.cfg.target_tau)
        for online, target in ((self.policy, self.target_policy), (self.mixer, self.target_mixer)):
            for p, tp in zip(online.parameters(), target.parameters()):
                tp.copy_(p) if tau == 1.0 else tp.lerp_(p, tau)

    def state_dict(self) -> dict[str, Any]:
        state = {"policy": self.policy.state_dict(), "mixer": self.mixer.state_dict(),
                 "target_policy": self.target_policy.state_dict(), "target_mixer": self.target_mixer.state_dict(),
                 "optimizer": self.optimizer.state_dict()}
        if self.reward_scaling is not None:
            state["reward_scaling"] = self.reward_scaling.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.mixer.load_state_dict(state["mixer"])
        self.target_policy.load_state_dict(state["target_policy"])
        self.target_mixer.load_state_dict(state["target_mixer"])
        self.optimizer.load_state_dict(state["optimizer"])
        # Checkpoints written before the option existed have no statistics: they never had it on.
        if self.reward_scaling is not None and "reward_scaling" in state:
            self.reward_scaling.load_state_dict(state["reward_scaling"])
