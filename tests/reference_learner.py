"""A straightforward step-by-step Q-learner loss (PyMARL's q_learner loop), kept as the reference
that the vectorised :class:`marl.learner.Learner` must match (tests/test_learner_reference.py) and
as the baseline of ``benchmarks/throughput.py``'s learner ratio.

It loops over time exactly as PyMARL does: the agent is called one step at a time carrying the
hidden state, the mixer per step, targets per step.
"""

from __future__ import annotations

import torch

from marl.learner import Learner


def reference_loss(learner: Learner, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    cfg = learner.cfg
    obs, actions, avail = batch["obs"], batch["actions"], batch["avail"]
    B, T, n = actions.shape
    A = avail.shape[-1]
    last = torch.cat([torch.full_like(actions[:, :1], A), actions], dim=1)

    def unroll(policy):
        h = policy.initial_hidden(B, obs.device)
        qs = []
        for t in range(T + 1):
            q, h = policy(obs[:, t:t + 1], last[:, t:t + 1], h)
            qs.append(q[:, 0])
        return torch.stack(qs, dim=1)  # [B, T+1, n, A]

    q = unroll(learner.policy)
    with torch.no_grad():
        tq = unroll(learner.target_policy)
    losses, count = [], 0.0
    y_next = None
    ys = [None] * T
    for t in range(T - 1, -1, -1):  # targets per step, newest first (TD(λ) needs y_{t+1})
        av = avail[:, t + 1]
        av = av | ~av.any(-1, keepdim=True)
        pick = (q[:, t + 1].detach() if cfg.double_q else tq[:, t + 1]).masked_fill(~av, -torch.inf).argmax(-1)
        v_next = learner.target_mixer(tq[:, t + 1].gather(-1, pick.unsqueeze(-1)).squeeze(-1), batch["state"][:, t + 1])
        if y_next is not None and cfg.td_lambda > 0:
            more = batch["filled"][:, t + 1].unsqueeze(-1)
            v_next = torch.where(more, (1 - cfg.td_lambda) * v_next + cfg.td_lambda * y_next, v_next)
        y = batch["reward"][:, t].unsqueeze(-1) + cfg.gamma * (~batch["terminated"][:, t]).unsqueeze(-1) * v_next
        ys[t] = y.detach()
        y_next = y
    for t in range(T):
        chosen = q[:, t].gather(-1, actions[:, t].unsqueeze(-1)).squeeze(-1)
        q_tot = learner.mixer(chosen, batch["state"][:, t])
        mask = batch["filled"][:, t].unsqueeze(-1).expand_as(q_tot).float()
        losses.append((((q_tot - ys[t]) * mask) ** 2).sum())
        count += float(mask.sum())
    return torch.stack(losses).sum() / count
