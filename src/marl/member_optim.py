"""Optimiser steps and gradient clipping for S independent members stacked along dimension 0.

A vectorised run (``seeds_per_process``) trains S learners whose parameters are tensors
``[S, ...]``. Adam and RMSprop are elementwise, so one optimiser over the stacked tensors computes
S optimisers at once, with two exceptions that this module handles and ``torch.optim`` does not:

* each member keeps its own step count (Adam's bias correction), because members that finish
  episodes at different times take different numbers of updates;
* a member that must not step this round is masked: its parameters and its moments stay exactly
  as they were (a zero gradient would still move Adam's moments and RMSprop's average).

Clipping is by each member's own gradient norm (one global norm over all members would couple
them). The maths and the order of operations are torch's (``torch.optim.Adam`` / ``RMSprop`` with
``foreach=True``, ``clip_grad_norm_``), so a member agrees with a standalone run up to float
rounding, and :meth:`MemberOptimizer.member_state` writes a member's state in torch's own
``state_dict`` format (a vectorised run's checkpoints are those of standalone runs).
"""

from __future__ import annotations

from typing import Any

import torch

from marl.config import Optimizer


def member_grad_norms(grads: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of each member's whole gradient: ``[S]`` (``clip_grad_norm_``'s total norm)."""
    per_param = torch.stack([g.flatten(1).norm(dim=1) for g in grads])  # [P, S]
    return torch.linalg.vector_norm(per_param, 2, dim=0)


def clip_member_grads_(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale each member's gradient to norm <= ``max_norm`` in place; return the norms before."""
    norms = member_grad_norms(grads)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *[1] * (g.dim() - 1)))
    return norms


def _per_member(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *[1] * (like.dim() - 1))


class MemberOptimizer:
    """Adam or RMSprop over stacked member parameters, with per-member steps and a step mask."""

    def __init__(self, params: list[torch.Tensor], cfg: Any) -> None:
        self.params = params
        self.kind = Optimizer(cfg.optimizer)
        self.lr, self.eps = float(cfg.lr), float(cfg.optim_eps)
        self.alpha = float(cfg.rmsprop_alpha)
        self.betas = (0.9, 0.999)  # torch's Adam defaults, as the standalone learner uses
        S = params[0].shape[0]
        self.steps = torch.zeros(S, dtype=torch.float64)
        names = ("exp_avg", "exp_avg_sq") if self.kind is Optimizer.adam else ("square_avg",)
        self.moments = {n: [torch.zeros_like(p) for p in params] for n in names}

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor], mask: torch.Tensor) -> None:
        """One step for the members where ``mask`` [S] is True; the others are left untouched."""
        self.steps += mask.to(torch.float64).cpu()
        for i, (p, g) in enumerate(zip(self.params, grads)):
            m = _per_member(mask.to(p.device), p)
            if self.kind is Optimizer.adam:
                self._adam(i, p, g, m)
            else:
                self._rmsprop(i, p, g, m)

    def _adam(self, i: int, p: torch.Tensor, g: torch.Tensor, m: torch.Tensor) -> None:
        b1, b2 = self.betas
        exp_avg, exp_avg_sq = self.moments["exp_avg"][i], self.moments["exp_avg_sq"][i]
        exp_avg.copy_(torch.where(m, exp_avg.lerp(g, 1 - b1), exp_avg))
        exp_avg_sq.copy_(torch.where(m, exp_avg_sq.mul(b2).addcmul(g, g, value=1 - b2), exp_avg_sq))
        steps = self.steps.clamp(min=1.0)  # a member that never stepped is masked anyway
        step_size = (self.lr / (1 - b1**steps)).to(p.dtype).to(p.device)  # in float64, as torch's Python floats
        bc2_sqrt = ((1 - b2**steps) ** 0.5).to(p.dtype).to(p.device)
        denom = (exp_avg_sq.sqrt() / _per_member(bc2_sqrt, p)).add_(self.eps)
        p.copy_(torch.where(m, p - (exp_avg * _per_member(step_size, p)) / denom, p))

    def _rmsprop(self, i: int, p: torch.Tensor, g: torch.Tensor, m: torch.Tensor) -> None:
        square_avg = self.moments["square_avg"][i]
        square_avg.copy_(torch.where(m, square_avg.mul(self.alpha).addcmul(g, g, value=1 - self.alpha), square_avg))
        avg = square_avg.sqrt().add_(self.eps)
        p.copy_(torch.where(m, p.addcdiv(g, avg, value=-self.lr), p))

    def member_state(self, s: int, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Member ``s``'s state as ``optimizer`` (a standalone torch optimiser) would save it."""
        params = optimizer.param_groups[0]["params"]
        state = {j: {"step": torch.tensor(float(self.steps[s])),
                     **{n: buf[j][s].clone() for n, buf in self.moments.items()}}
                 for j in range(len(params)) if self.steps[s] > 0}
        saved = optimizer.state_dict()
        return {"state": state, "param_groups": saved["param_groups"]}

    @torch.no_grad()
    def load_member_state(self, s: int, state: dict[str, Any]) -> None:
        """Set member ``s`` from a torch optimiser ``state_dict`` (a standalone run's, or ours)."""
        entries = state["state"]
        self.steps[s] = float(entries[0]["step"]) if entries else 0.0
        for n, buf in self.moments.items():
            for j, b in enumerate(buf):
                b[s] = entries[j][n] if entries else 0.0
