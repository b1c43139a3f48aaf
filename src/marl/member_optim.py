"""Optimiser steps and gradient clipping for S independent members stacked along dimension 0.

A vectorised run (``seeds_per_process``) trains S learners whose parameters are tensors
``[S, ...]``. Each member is stepped by torch's own optimiser, the one the standalone learner
builds (:func:`marl.learner.make_optimizer`), over that member's views ``p[s]`` of the stacked
parameters: one optimiser holds every member's views, each view with its own state as a
standalone parameter has. That gives what a group needs and a single optimiser over the stacked
tensors would not:

* each member keeps its own step count (Adam's bias correction), because members that finish
  episodes at different times take different numbers of updates;
* a member that must not step this round is left out (its views get no gradient, which torch's
  optimisers skip): its parameters and moments stay exactly as they were (a zero gradient would
  still move Adam's moments and RMSprop's average).

Clipping is by each member's own gradient norm (one global norm over all members would couple
them), as ``clip_grad_norm_`` computes it. A member's optimiser state is a standalone learner's,
so :meth:`MemberOptimizer.member_state` writes it in torch's own ``state_dict`` format (a
vectorised run's checkpoints are those of standalone runs).
"""

from __future__ import annotations

from typing import Any

import torch

from marl.learner import make_optimizer


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


class MemberOptimizer:
    """``learner.optimizer`` over stacked member parameters, with per-member steps and a step mask."""

    def __init__(self, params: list[torch.Tensor], cfg: Any) -> None:
        self.params = params
        # views[s][j]: member s's part of parameter j, a leaf that shares the stacked storage
        self.views = [[p.detach()[s] for p in params] for s in range(params[0].shape[0])]
        self.optimizer = make_optimizer([v for member in self.views for v in member], cfg)

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor], mask: torch.Tensor) -> None:
        """One step for the members where ``mask`` [S] is True; the others are left untouched."""
        stepping = [s for s, m in enumerate(mask.tolist()) if m]
        for s in stepping:
            for view, g in zip(self.views[s], grads):
                view.grad = g[s]
        self.optimizer.step()
        for s in stepping:
            for view in self.views[s]:
                view.grad = None

    @property
    def steps(self) -> torch.Tensor:
        """How many steps each member has taken: ``[S]``."""
        return torch.tensor([float(self.optimizer.state[views[0]]["step"]) if views[0] in self.optimizer.state
                             else 0.0 for views in self.views])

    def member_state(self, s: int, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Member ``s``'s state as ``optimizer`` (a standalone torch optimiser) would save it."""
        state = {j: {k: v.clone() for k, v in self.optimizer.state[view].items()}
                 for j, view in enumerate(self.views[s]) if view in self.optimizer.state}
        return {"state": state, "param_groups": optimizer.state_dict()["param_groups"]}

    @torch.no_grad()
    def load_member_state(self, s: int, state: dict[str, Any]) -> None:
        """Set member ``s`` from a torch optimiser ``state_dict`` (a standalone run's, or ours), as
        torch's ``load_state_dict`` does: moments to the parameter's dtype and device, ``step`` as saved."""
        entries = state["state"]
        for j, view in enumerate(self.views[s]):
            if j not in entries:
                self.optimizer.state.pop(view, None)
                continue
            self.optimizer.state[view] = {k: v.clone() if k == "step" else v.to(view.device, view.dtype, copy=True)
                                          for k, v in entries[j].items()}
