"""The one Q-learner shared by ``qmix``, ``vdn`` and ``none`` (PyMARL's q_learner, vectorised).

One update, read top to bottom:

1. Q_i for every step of every sampled episode: the agent runs over whole padded sequences.
2. Targets from the target networks at t+1: double Q picks the argmax with the online network,
   among the available actions; the target mixer values those actions (for QMIX Q_tot', for
   Weighted QMIX its unrestricted Q*'); ``terminated`` stops bootstrapping, truncation does not
   unless ``time_limit_end=terminal`` (docs/architecture.md, invariant 3); TD(λ) blends n-step
   returns when ``td_lambda > 0``.
3. Q_tot = mixer(Q_i(a_t), s_t) for all steps at once, given the targets.
4. Masked MSE over real steps (``filled``), weighted per step if the mixer says so, plus any loss
   terms of the mixer's own; gradient clipping, a finiteness check of the loss terms, the
   gradient norm and the Q-values (invariant 8), one optimiser step.

The mixer is reached only through :func:`marl.mixers.mix` with a :class:`marl.mixers.MixerInput`
(and :func:`marl.mixers.bind` once at construction): no branch on the mixer's name. Its
``out_dim`` columns are all regression targets, so independent learners (``none``, one column per
agent) need no special case.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from marl.buffers import Episodes, truncated
from marl.config import Optimizer, TimeLimitEnd
from marl.errors import ConfigError, NonFiniteError
from marl.mixers import MixerInput, bind, mix
from marl.policy import Policy
from marl.reward_scaling import RunningMeanStd, statistics_mask


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
EXTRA_LOSS_PREFIX = "loss_"  # a mixer's own loss terms, reported as loss_<name>


def finite_keys(stats: dict[str, torch.Tensor]) -> list[str]:
    """The statistics that must stay finite: :data:`FINITE_STATS` and each extra loss term
    (``loss_<name>``, a mixer's own)."""
    return [*FINITE_STATS, *(k for k in stats if k.startswith(EXTRA_LOSS_PREFIX))]


def all_finite(stats: dict[str, torch.Tensor]) -> torch.Tensor:
    """Whether every statistic of :func:`finite_keys` is finite: 0-dim for one learner, ``[S]`` for
    a seed group's members (marl.vector_learner), so both stop on exactly the same statistics."""
    return torch.isfinite(torch.stack([stats[k].float() for k in finite_keys(stats)])).all(dim=0)


def non_finite(stats: dict[str, torch.Tensor]) -> NonFiniteError | None:
    """The error naming each statistic of :func:`finite_keys` that is NaN or infinite, or None
    when all are finite."""
    if bool(all_finite(stats)):
        return None
    keys = finite_keys(stats)
    values = torch.stack([stats[k].float() for k in keys])
    bad = ", ".join(f"{k}={v:g}" for k, v in zip(keys, values.tolist()) if not math.isfinite(v))
    return NonFiniteError(f"non-finite {bad}")


def check_finite(stats: dict[str, torch.Tensor]) -> None:
    """Raise :func:`non_finite`'s error, if any.

    One fused check and one host read per update: nothing on CPU, and on CUDA the acting step
    that follows synchronises anyway. Argmax over NaN Q-values picks action 0, so a run that went
    on would still "evaluate" (on the climbing game, to the optimum 275).
    """
    error = non_finite(stats)
    if error is not None:
        raise error


# The update each ``learner.optimizer`` value names: the one mapping for a standalone learner and
# for every member of a seed group (marl.member_optim), so the two can never pick differently.
OPTIMIZERS: dict[Optimizer, Callable[[list[torch.Tensor], Any], torch.optim.Optimizer]] = {
    Optimizer.rmsprop: lambda params, cfg: torch.optim.RMSprop(
        params, lr=cfg.lr, alpha=cfg.rmsprop_alpha, eps=cfg.optim_eps, foreach=True),
    Optimizer.adam: lambda params, cfg: torch.optim.Adam(params, lr=cfg.lr, eps=cfg.optim_eps, foreach=True),
}


def make_optimizer(params: list[torch.Tensor], cfg: Any) -> torch.optim.Optimizer:
    """The torch optimiser that ``cfg.optimizer`` (``learner.optimizer``) names, over ``params``."""
    kind = getattr(cfg.optimizer, "value", cfg.optimizer)
    build = next((f for o, f in OPTIMIZERS.items() if o.value == kind), None)
    if build is None:
        raise ConfigError(f"learner.optimizer={kind!r} is invalid: choose one of "
                          f"{', '.join(o.value for o in OPTIMIZERS)}")
    return build(params, cfg)


class Learner:
    def __init__(self, policy: Policy, mixer: nn.Module, cfg: Any, device: torch.device,
                 check_finite: bool = True) -> None:
        self.check_finite = check_finite
        # A plain dataclass copy: attribute access on an OmegaConf node costs microseconds per read.
        self.cfg = OmegaConf.to_object(cfg) if isinstance(cfg, DictConfig) else cfg
        self.policy = policy.to(device)
        bind(mixer, self.policy)  # a mixer with agent networks of its own builds them now
        self.mixer = mixer.to(device)
        self.target_policy = copy.deepcopy(self.policy).requires_grad_(False)
        self.target_mixer = copy.deepcopy(self.mixer).requires_grad_(False)
        self.params = list(self.policy.parameters()) + list(self.mixer.parameters())
        self.optimizer = make_optimizer(self.params, cfg)
        self.device = device
        self.time_limit_is_terminal = TimeLimitEnd(cfg.time_limit_end) is TimeLimitEnd.terminal
        # EPyMARL's reward standardisation (marl.reward_scaling): one statistic of the team reward.
        self.reward_scaling = (RunningMeanStd(device=device)
                               if getattr(self.cfg, "standardise_rewards", False) else None)

    def loss(self, batch: Episodes) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The masked TD loss of one batch of episodes, and statistics for logging.

        A function of ``policy``, ``mixer``, ``target_policy``, ``target_mixer``, the batch and
        ``cfg`` (and the reward statistics below): the mixers are called through
        :func:`marl.mixers.mix`, the target mixer first (the bootstrap values), then the online
        mixer with the targets. A mixer's ``td_weight`` weights the squared TD errors and its
        ``losses`` are added to the loss; both are reported in the statistics (``loss_td``,
        ``loss_<name>``, ``td_weight_mean``), and ``loss`` is the total.

        With ``standardise_rewards`` the batch's real steps first update the running reward
        statistics, then its rewards are standardised before the targets are computed (EPyMARL's
        QLearner.train); padded steps neither update them nor reach the loss.
        """
        actions, filled = batch["actions"], batch["filled"]
        reward = batch["reward"]
        if self.reward_scaling is not None:
            self.reward_scaling.update(reward, statistics_mask(filled, self.cfg.reward_stats_include_padding))
            reward = torch.where(filled, self.reward_scaling.normalise(reward), 0.0)
        avail = batch["avail"]
        avail = avail | ~avail.any(dim=-1, keepdim=True)  # no action left (e.g. dead): any will do
        state = batch["state"]
        q = self.policy.q_sequence(batch)  # [B, T+1, n, A]
        chosen = q[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        greedy = q.detach().masked_fill(~avail, -torch.inf).argmax(dim=-1)  # [B, T+1, n]
        with torch.no_grad():
            target_q = self.target_policy.q_sequence(batch)[:, 1:]
            best = (greedy[:, 1:] if self.cfg.double_q
                    else target_q.masked_fill(~avail[:, 1:], -torch.inf).argmax(dim=-1))
            next_values = mix(self.target_mixer, MixerInput(
                chosen=target_q.gather(-1, best.unsqueeze(-1)).squeeze(-1), state=state[:, 1:], q_all=target_q,
                avail=avail[:, 1:], actions=best, greedy=greedy[:, 1:], episodes=batch, next_step=True)).q_tot
            terminated = batch["terminated"]
            if self.time_limit_is_terminal:  # EPyMARL's gym runner: a time-limit end is not bootstrapped
                terminated = terminated | truncated(batch)
            y = lambda_returns(reward, terminated, filled, next_values,
                               self.cfg.gamma, self.cfg.td_lambda)
            mask = filled.unsqueeze(-1).expand_as(y).to(y.dtype)
        mixed = mix(self.mixer, MixerInput(
            chosen=chosen, state=state[:, :-1], q_all=q[:, :-1], avail=avail[:, :-1], actions=actions,
            greedy=greedy[:, :-1], episodes=batch, targets=y, mask=mask, target_mixer=self.target_mixer))
        q_tot = mixed.q_tot  # [B, T, k]
        td = (q_tot - y) * mask
        n = mask.sum()
        td_loss = (td**2).sum() / n if mixed.td_weight is None else (mixed.td_weight * td**2).sum() / n
        loss = td_loss
        for term in mixed.losses.values():
            loss = loss + term
        stats = {"loss": loss.detach(), "td_abs": td.abs().sum().detach() / n,
                 "q_taken_mean": (q_tot.detach() * mask).sum() / n, "target_mean": (y * mask).sum() / n}
        if mixed.losses:
            stats[f"{EXTRA_LOSS_PREFIX}td"] = td_loss.detach()
        stats.update({f"{EXTRA_LOSS_PREFIX}{name}": term.detach() for name, term in mixed.losses.items()})
        if mixed.td_weight is not None:
            stats["td_weight_mean"] = (mixed.td_weight * mask).sum() / n
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
