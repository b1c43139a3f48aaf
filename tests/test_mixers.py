"""Mixer properties the PyMARL family never tested."""

import torch

from marl.config import compose
from marl.registry import MIXERS


def build(name: str, n_agents: int = 3, state_dim: int = 5, *overrides: str):
    cfg = compose([f"mixer={name}", "run_dir=.", *overrides]).mixer
    return MIXERS.build(cfg, n_agents=n_agents, state_dim=state_dim)


def test_qmix_is_monotonic_in_every_agent_value():
    torch.manual_seed(0)
    mixer = build("qmix")
    for scale in (0.1, 1.0, 10.0):
        qs = (torch.randn(64, 7, 3) * scale).requires_grad_(True)
        states = torch.randn(64, 7, 5) * scale
        (grad,) = torch.autograd.grad(mixer(qs, states).sum(), qs)
        assert (grad >= 0).all(), "dQ_tot/dQ_i must be non-negative"
        assert (grad > 0).float().mean() > 0.5, "gradients should mostly be strictly positive"


def test_qmix_depends_on_state_and_keeps_leading_dims():
    torch.manual_seed(0)
    mixer = build("qmix")
    qs = torch.randn(4, 6, 3)
    out_a, out_b = mixer(qs, torch.randn(4, 6, 5)), mixer(qs, torch.randn(4, 6, 5))
    assert out_a.shape == (4, 6, 1)
    assert not torch.allclose(out_a, out_b)


def test_qmix_without_the_state_ignores_it_and_stays_monotonic():
    torch.manual_seed(0)
    mixer = build("qmix", 3, 5, "mixer.use_state=false")
    assert not mixer.needs_state, "a state-free QMIX must run on an env without a state"
    qs = torch.randn(4, 6, 3).requires_grad_(True)
    out_a, out_b = mixer(qs, torch.randn(4, 6, 5)), mixer(qs, torch.randn(4, 6, 5) * 100)
    assert out_a.shape == (4, 6, 1)
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)
    (grad,) = torch.autograd.grad(out_a.sum(), qs)
    assert (grad >= 0).all()
    assert not torch.allclose(out_a, mixer(qs * 2, torch.randn(4, 6, 5))), "it still mixes the agents' values"


def test_vdn_is_the_sum():
    qs = torch.randn(8, 5, 3)
    out = build("vdn")(qs, torch.randn(8, 5, 5))
    assert out.shape == (8, 5, 1)
    torch.testing.assert_close(out[..., 0], qs.sum(-1))


def test_none_keeps_per_agent_values():
    qs = torch.randn(8, 5, 3)
    mixer = build("none")
    out = mixer(qs, torch.randn(8, 5, 5))
    assert mixer.out_dim == 3
    assert torch.equal(out, qs)
