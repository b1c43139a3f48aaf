"""A GRU over whole sequences with a hand-written backward pass (backpropagation through time).

Why: at MARL sizes (64 units, a few hundred rows) a GRU step is a handful of tiny kernels, so
time goes to per-op overhead, not arithmetic. ``nn.GRU``'s CPU path records ~25 autograd nodes
per step; here the forward is 7 ops per step and the backward 4, with everything that does not
depend on the recurrence (input projections, gate derivatives, weight gradients) done for all
steps at once. The maths is ``nn.GRU``'s exactly (gate order r, z, n; ``b_hn`` inside the reset
gate), checked against ``nn.GRUCell`` step by step in tests/test_fast_gru.py.
"""

from __future__ import annotations

from typing import Any

import torch


def _forward(gi: torch.Tensor, h: torch.Tensor, w_hh_t: torch.Tensor,
             b_hh: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """gi [T, N, 3H] (input projections incl. b_ih), h [N, H] -> per step (h_t, rz_t, gh_n_t)."""
    H = h.shape[-1]
    gi_rz, gi_n = gi[..., : 2 * H], gi[..., 2 * H:]
    hs, rzs, ghns = [], [], []
    for t in range(gi.shape[0]):
        gh = torch.addmm(b_hh, h, w_hh_t)
        rz = torch.sigmoid(gi_rz[t] + gh[:, : 2 * H])
        ghn = gh[:, 2 * H:]
        n = torch.tanh(torch.addcmul(gi_n[t], rz[:, :H], ghn))
        h = torch.addcmul(n, rz[:, H:], h - n)
        hs.append(h)
        rzs.append(rz)
        ghns.append(ghn)
    return hs, rzs, ghns


class _GRUSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, gi: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
        hs, rzs, ghns = _forward(gi, h0, w_hh.t(), b_hh)
        out = torch.stack(hs)
        ctx.save_for_backward(gi, h0, w_hh, out, torch.stack(rzs), torch.stack(ghns))
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, ...]:
        gi, h0, w_hh, out, rz, ghn = ctx.saved_tensors
        T, N, H = out.shape
        r, z = rz[..., :H], rz[..., H:]
        h_prev = torch.cat([h0.unsqueeze(0), out[:-1]])
        n = torch.tanh(torch.addcmul(gi[..., 2 * H:], r, ghn))
        a = (1 - z) * (1 - n * n)  # d h / d (pre-tanh n)
        # d gh_t = dh_t * m_t for the three gate blocks [r, z, n] of the hidden projection.
        m = torch.cat([a * ghn * r * (1 - r), (h_prev - n) * z * (1 - z), a * r], dim=-1)
        d_gh = torch.empty_like(m)
        dhs = torch.empty_like(out)
        dh = grad_out[T - 1]
        for t in range(T - 1, -1, -1):
            dhs[t] = dh
            torch.mul(dh.repeat(1, 3), m[t], out=d_gh[t])
            dh = torch.addmm(dh * z[t], d_gh[t], w_hh)
            if t > 0:
                dh = dh + grad_out[t - 1]
        d_gi = torch.cat([d_gh[..., : 2 * H], dhs * a], dim=-1)
        d_w_hh = d_gh.reshape(-1, 3 * H).t() @ h_prev.reshape(-1, H)
        d_b_hh = d_gh.sum(dim=(0, 1))
        return d_gi, dh, d_w_hh, d_b_hh


def gru_sequence(x: torch.Tensor, h0: torch.Tensor, gru: torch.nn.GRU) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a one-layer ``nn.GRU``'s parameters over x [T, N, in] from h0 [N, H] -> (out [T, N, H], h_T)."""
    gi = torch.nn.functional.linear(x, gru.weight_ih_l0, gru.bias_ih_l0)
    if torch.is_grad_enabled() and (gi.requires_grad or gru.weight_hh_l0.requires_grad):
        out = _GRUSequence.apply(gi, h0, gru.weight_hh_l0, gru.bias_hh_l0)
    else:
        out = torch.stack(_forward(gi, h0, gru.weight_hh_l0.t(), gru.bias_hh_l0)[0])
    return out, out[-1]
