"""The fused CPU GRU (marl/agents/gru_sequence.cpp) computes nn.GRU's outputs and gradients.

Shapes cover a time axis that splits into several chunks with a partial last one, one step, one
sequence, and more rows than a chunk holds (one step per chunk).
"""

import pytest
import torch
from torch import nn

from marl.agents.gru_sequence import gru_sequence


def grads_of(fn, tensors):
    for t in tensors:
        t.grad = None
    out = fn()
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * weights).sum().backward()
    return out.detach(), [t.grad.clone() for t in tensors]


@pytest.mark.parametrize("T,N,I,H", [(51, 64, 38, 64), (1, 5, 3, 8), (9, 1, 4, 16), (3, 700, 6, 32), (20, 33, 64, 64)])
def test_outputs_and_every_gradient_match_nn_gru(T, N, I, H):
    torch.manual_seed(T * N + H)
    rnn = torch.nn.GRU(I, H)
    x = torch.randn(T, N, I, requires_grad=True)
    h0 = (0.5 * torch.randn(N, H)).requires_grad_()
    tensors = [x, h0, *rnn.parameters()]
    ref_out, ref_grads = grads_of(lambda: rnn(x, h0.unsqueeze(0))[0], tensors)
    out, grads = grads_of(lambda: gru_sequence(rnn, x, h0), tensors)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    names = ["x", "h0", *(n for n, _ in rnn.named_parameters())]
    for name, g, ref in zip(names, grads, ref_grads):
        torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-4 * max(1.0, ref.abs().max().item()), msg=name)


def test_no_grad_pass_equals_the_training_pass():
    torch.manual_seed(0)
    rnn = torch.nn.GRU(12, 32)
    x, h0 = torch.randn(17, 40, 12), torch.randn(40, 32)
    with_grad = gru_sequence(rnn, x, h0)
    assert with_grad.requires_grad
    with torch.no_grad():
        without = gru_sequence(rnn, x, h0)
    torch.testing.assert_close(without, with_grad.detach(), rtol=0, atol=0)


def test_other_dtypes_are_refused_by_name():  # the agent sends them to nn.GRU instead
    rnn = torch.nn.GRU(4, 8).double()
    with pytest.raises(RuntimeError, match="float32"):
        gru_sequence(rnn, torch.randn(3, 2, 4, dtype=torch.double), torch.zeros(2, 8, dtype=torch.double))


def test_agent_falls_back_to_nn_gru_with_a_warning_when_the_kernel_cannot_build(monkeypatch):
    from marl.agents import gru_sequence as module
    from marl.agents.rnn import RNNAgent

    def broken() -> None:
        raise RuntimeError("Error building extension 'marl_gru_sequence': c++: not found")

    torch.manual_seed(0)
    agent = RNNAgent(input_dim=7, n_actions=4, hidden_dim=16)
    x, h0 = torch.randn(6, 5, 7), torch.randn(5, 16)
    fused, _ = agent(x, h0)
    module.available.cache_clear()
    monkeypatch.setattr(module, "kernel", broken)
    try:
        with pytest.warns(RuntimeWarning, match="c\\+\\+: not found.*using nn.GRU"):
            fallback, _ = agent(x, h0)
    finally:
        module.available.cache_clear()
    torch.testing.assert_close(fallback, fused, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("agent,device,builds", [("rnn", "auto", True), ("rnn", "cpu", True),
                                                 ("rnn", "cuda", False), ("mlp", "auto", False)])
def test_a_sweep_builds_the_kernel_once_before_its_jobs_when_they_need_it(monkeypatch, agent, device, builds):
    from omegaconf import OmegaConf

    from marl.agents import gru_sequence as module
    from marl.callbacks import SweepSummary

    calls = []
    monkeypatch.setattr(module, "available", lambda: calls.append(1) or True)
    SweepSummary().on_multirun_start(OmegaConf.create({"agent": {"name": agent}, "device": device}))
    assert len(calls) == int(builds)


def test_under_vmap_each_member_runs_the_kernel_with_its_own_gradients():
    """A vectorised learner's members (torch.func.vmap over stacked weights) keep the fused kernel."""
    from torch.func import vmap
    from types import SimpleNamespace

    S, T, N, H = 3, 7, 5, 4
    torch.manual_seed(0)
    rnns = [nn.GRU(H, H) for _ in range(S)]
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    stacked = [torch.stack([getattr(r, n) for r in rnns]).detach().requires_grad_() for n in names]
    x = torch.randn(S, T, N, H)

    def member(w_ih, w_hh, b_ih, b_hh, x):
        rnn = SimpleNamespace(weight_ih_l0=w_ih, weight_hh_l0=w_hh, bias_ih_l0=b_ih, bias_hh_l0=b_hh)
        return gru_sequence(rnn, x, torch.zeros(x.shape[1], H))

    out = vmap(member)(*stacked, x)
    (out**2).sum().backward()
    for s, rnn in enumerate(rnns):
        want, _ = rnn(x[s], torch.zeros(1, N, H))
        (want**2).sum().backward()
        torch.testing.assert_close(out[s], want)
        for n, w in zip(names, stacked):
            torch.testing.assert_close(w.grad[s], getattr(rnn, n).grad, msg=lambda m: f"member {s} {n}: {m}")
    with torch.no_grad():  # the target network's pass
        torch.testing.assert_close(vmap(member)(*[w.detach() for w in stacked], x), out.detach())
