"""Weighted QMIX (ow_qmix, cw_qmix) and QPLEX, piece by piece, and their wiring through the learner.

* the weighting functions of OW- and CW-QMIX on hand-picked values;
* the learner's loss with a Weighted QMIX mixer is Σ w (Q_tot - y)² / N + Σ (Q* - y)² / N with
  y = r + γ Q*'(s', ū'), Q*'s agents are a network of their own inside the mixer (so the target
  copy and ``update_targets`` cover them), and its extra loss is checked for finiteness;
* QPLEX's advantage mixing on a mixer whose weights are set by hand, its stopped gradient, and IGM:
  the greedy joint action of Q_tot is the agents' greedy actions, for random mixers and values;
* the new mixers run vectorised (``marl.vector_learner``): each member's loss and statistics
  are its standalone learner's;
* the new mixers change only the ``mixer`` subtree of a config, under every preset, and W&B
  names and groups them as it does qmix (one group per config, across seeds).
"""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from marl.config import compose
from marl.envs.base import EnvSpec
from marl.errors import ConfigError, NonFiniteError
from marl.learner import Learner, check_finite
from marl.mixers import MixerInput, mix
from marl.mixers.wqmix import central_weights, optimistic_weights
from marl.policy import Policy
from marl.registry import MIXERS
from marl.vector_learner import VectorLearner, stack_batches
from marl.wandb_naming import wandb_identity

import helpers
from helpers import run_config

SPEC = EnvSpec(n_agents=3, obs_dim=4, state_dim=5, n_actions=4, episode_limit=6)
NEW = ("ow_qmix", "cw_qmix", "qplex")


def random_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    return helpers.random_batch(SPEC, [6, 6, 4, 2, 1], seed)


def make_learner(tmp_path, mixer: str, *overrides: str, seed: int = 0) -> Learner:
    torch.manual_seed(seed)
    cfg = run_config(tmp_path, f"mixer={mixer}", "agent=rnn", *overrides)
    learner = Learner(Policy(SPEC, cfg.agent), MIXERS.build(cfg.mixer, n_agents=3, state_dim=5), cfg.learner,
                      torch.device("cpu"))
    with torch.no_grad():  # targets differ from the online networks
        for p in [*learner.target_policy.parameters(), *learner.target_mixer.parameters()]:
            p.add_(0.1 * torch.randn_like(p))
    return learner


# --- Weighted QMIX --------------------------------------------------------------------------------
def test_optimistic_weights_favour_underestimated_joint_actions():
    q_tot = torch.tensor([[[1.0], [3.0], [2.0], [-5.0]]])
    y = torch.tensor([[[2.0], [2.0], [2.0], [-4.0]]])
    w = optimistic_weights(q_tot, y, alpha=0.1)
    torch.testing.assert_close(w, torch.tensor([[[1.0], [0.1], [0.1], [1.0]]]))  # Q_tot < y: 1; >=: α


def test_central_weights_favour_the_greedy_action_and_better_targets():
    is_greedy = torch.tensor([[[True], [False], [False], [False]]])
    y = torch.tensor([[[0.0], [5.0], [1.0], [3.0]]])
    greedy_value = torch.tensor([[[9.0], [4.0], [4.0], [3.0]]])  # Q*'(s, ū)
    w = central_weights(is_greedy, y, greedy_value, alpha=0.25)
    # greedy: 1 whatever y; y above Q*'(s, ū): 1; below or equal: α
    torch.testing.assert_close(w, torch.tensor([[[1.0], [1.0], [0.25], [0.25]]]))


@pytest.mark.parametrize("mixer", ["ow_qmix", "cw_qmix"])
def test_weighted_qmix_loss_is_the_weighted_qmix_loss_plus_the_joint_loss(tmp_path, mixer):
    learner = make_learner(tmp_path, mixer, "learner.gamma=0.9")
    m, tm, cfg = learner.mixer, learner.target_mixer, learner.cfg
    batch = random_batch()
    loss, stats = learner.loss(batch)

    avail = batch["avail"] | ~batch["avail"].any(-1, keepdim=True)
    state, actions, filled = batch["state"], batch["actions"], batch["filled"]
    q = learner.policy.q_sequence(batch)
    greedy = q.detach().masked_fill(~avail, -math.inf).argmax(-1)
    with torch.no_grad():  # y = r + γ (1 - terminated) Q*'(s', ū'), ū' QMIX's greedy actions (double Q)
        v_next = tm.star(batch, greedy[:, 1:], state[:, 1:], next_step=True)[..., 0]
        y = batch["reward"] + cfg.gamma * (~batch["terminated"]) * v_next
    chosen = q[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    q_tot = m.qmix(chosen, state[:, :-1])[..., 0]
    q_star = m.star(batch, actions, state[:, :-1], next_step=False)[..., 0]
    if mixer == "ow_qmix":
        w = torch.where(q_tot.detach() < y, 1.0, 0.1)
    else:
        with torch.no_grad():
            ref = tm.star(batch, greedy[:, :-1], state[:, :-1], next_step=False)[..., 0]
        w = torch.where((actions == greedy[:, :-1]).all(-1) | (y > ref), 1.0, 0.1)
    f, n = filled.float(), filled.sum()
    td_loss = (w * f * (q_tot - y) ** 2).sum() / n
    central = (f * (q_star - y) ** 2).sum() / n
    torch.testing.assert_close(stats["loss_td"], td_loss.detach())
    torch.testing.assert_close(stats["loss_central"], central.detach())
    torch.testing.assert_close(loss, td_loss + central)
    torch.testing.assert_close(stats["td_weight_mean"], (w * f).sum() / n)
    assert 0.1 < float(stats["td_weight_mean"]) < 1.0  # both weights occur on this batch
    # Q*'s agents learn from Q*'s loss only, the policy from QMIX's weighted loss only.
    grads = torch.autograd.grad(loss, [*learner.policy.parameters(), *m.central_agents.parameters()])
    own = torch.autograd.grad(td_loss, list(learner.policy.parameters()), retain_graph=True)
    for g, r in zip(grads, own):
        torch.testing.assert_close(g, r)


def test_weighted_qmix_agents_are_its_own_and_its_target_copy_follows(tmp_path):
    learner = make_learner(tmp_path, "ow_qmix")
    central, policy = learner.mixer.central_agents, learner.policy
    assert isinstance(central, Policy) and central is not policy
    assert not {id(p) for p in central.parameters()} & {id(p) for p in policy.parameters()}
    assert not torch.equal(central.agent.fc1.weight, policy.agent.fc1.weight)  # initialised afresh
    assert {id(p) for p in central.parameters()} <= {id(p) for p in learner.params}  # optimised
    target = learner.target_mixer.central_agents
    assert not torch.equal(target.agent.fc1.weight, central.agent.fc1.weight)
    learner.update_targets()
    for a, b in zip(learner.mixer.state_dict().values(), learner.target_mixer.state_dict().values()):
        assert torch.equal(a, b)
    assert any(k.startswith("central_agents.") for k in learner.state_dict()["target_mixer"])


def test_an_extra_loss_term_is_covered_by_the_finiteness_check():
    ok = {k: torch.tensor(1.0) for k in ("loss", "grad_norm", "q_taken_mean", "target_mean", "loss_td")}
    check_finite(ok)
    with pytest.raises(NonFiniteError, match="loss_central=nan"):
        check_finite({**ok, "loss_central": torch.tensor(float("nan"))})


def test_weighted_qmix_bad_alpha_is_a_config_error(tmp_path):
    cfg = run_config(tmp_path, "mixer=cw_qmix", "mixer.alpha=0")
    with pytest.raises(ConfigError, match="mixer.alpha=0.0 is invalid"):
        MIXERS.build(cfg.mixer, n_agents=2, state_dim=3)


# --- QPLEX ----------------------------------------------------------------------------------------
def hand_qplex():
    """n = 2 agents, A = 2 actions, s = 1, one head of one layer, every weight set by hand:
    w = |[2, -3]| = [2, 3], b = [0.5, -1], λ_0 = |-8| σ(0) σ(ln 3 if agent 1 takes action 1 else 0)
    = 3 or 2, λ_1 = 8 · 0.5 · 0.5 = 2."""
    cfg = compose(["mixer=qplex", "mixer.num_kernel=1", "mixer.adv_hypernet_layers=1", "run_dir=."]).mixer
    mixer = MIXERS.build(cfg, n_agents=2, state_dim=1)
    mixer.bind(SimpleNamespace(n_actions=2))
    with torch.no_grad():
        for p in mixer.parameters():
            p.zero_()
        mixer.w[-1].bias.copy_(torch.tensor([2.0, -3.0]))
        mixer.b[-1].bias.copy_(torch.tensor([0.5, -1.0]))
        mixer.lam.keys.biases[0].fill_(-8.0)  # head 0's (only) layer
        mixer.lam.actions.weights[0][0, 1 + 1 * 2 + 1, 0] = math.log(3.0)  # input [s, onehot(a_0), onehot(a_1)] -> agent 0
    return mixer


def qplex_input(q: torch.Tensor, actions: torch.Tensor, state: torch.Tensor, avail=None) -> MixerInput:
    """q [N, n, A], actions [N, n]."""
    avail = torch.ones_like(q, dtype=torch.bool) if avail is None else avail
    chosen = q.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    return MixerInput(chosen=chosen, state=state, q_all=q, avail=avail, actions=actions,
                      greedy=q.masked_fill(~avail, -math.inf).argmax(-1))


def test_qplex_mixes_advantages_as_computed_by_hand():
    mixer = hand_qplex()
    q = torch.tensor([[1.0, 3.0], [0.0, -2.0]]).expand(4, 2, 2).clone().requires_grad_(True)
    joint = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
    x = qplex_input(q, joint, torch.zeros(4, 1))
    q_tot = mix(mixer, x).q_tot[:, 0]
    # V = [3, 0]; Σ V' = (2·3 + .5) + (3·0 - 1) = 5.5; Q_tot = 5.5 + Σ λ_i w_i (Q_i - V_i):
    # (0,0): λ_0 = 2, A = [-2, 0]  -> 5.5 + 2·2·(-2)                 = -2.5
    # (0,1): λ_0 = 3, A = [-2, -2] -> 5.5 + 3·2·(-2) + 2·3·(-2)      = -18.5
    # (1,0): greedy, A = 0         -> 5.5
    # (1,1): A = [0, -2]           -> 5.5 + 2·3·(-2)                 = -6.5
    torch.testing.assert_close(q_tot, torch.tensor([-2.5, -18.5, 5.5, -6.5]))
    # Agent 2's action costs 16 after agent 1's first action but 12 after its second: not additive.
    # The advantages are held constant, so dQ_tot/dQ_i(a_i) = w_i, whatever λ.
    (grad,) = torch.autograd.grad(q_tot.sum(), q)
    want = torch.zeros(4, 2, 2)
    want[torch.arange(4).unsqueeze(1), torch.arange(2), joint] = torch.tensor([2.0, 3.0])
    torch.testing.assert_close(grad, want)


@pytest.mark.parametrize("seed", range(5))
def test_qplex_greedy_joint_action_is_the_agents_greedy_actions(seed):
    """IGM: argmax over all A^n joint actions of Q_tot = each agent's argmax of Q_i (among the
    available actions), on a random mixer with random values and states."""
    torch.manual_seed(seed)
    n, A, s, N = 3, 4, 5, 16
    mixer = MIXERS.build(compose(["mixer=qplex", "run_dir=."]).mixer, n_agents=n, state_dim=s)
    mixer.bind(SimpleNamespace(n_actions=A))
    with torch.no_grad():  # larger weights than the initialisation: λ and w far from uniform
        for p in mixer.parameters():
            p.mul_(3.0)
    q = torch.randn(N, n, A) * 5
    avail = torch.rand(N, n, A) > 0.3
    avail[..., 0] |= ~avail.any(-1)
    state = torch.randn(N, s)
    joints = torch.tensor(list(itertools.product(range(A), repeat=n)))  # [A^n, n]
    J = len(joints)
    x = qplex_input(q.repeat_interleave(J, 0), joints.repeat(N, 1), state.repeat_interleave(J, 0),
                    avail.repeat_interleave(J, 0))
    q_tot = mix(mixer, x).q_tot.view(N, J)
    ok = avail[:, torch.arange(n), joints].all(-1)  # [N, J] joint actions with every action available
    best = joints[q_tot.masked_fill(~ok, -math.inf).argmax(-1)]  # [N, n]
    assert torch.equal(best, q.masked_fill(~avail, -math.inf).argmax(-1))
    # and its value is Σ_i (w_i V_i + b_i), strictly above every other available joint action
    top = q_tot.masked_fill(~ok, -math.inf).topk(2, dim=-1).values
    assert (top[:, 0] > top[:, 1]).all()


# --- vectorised ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mixer", NEW)
def test_new_mixers_run_vectorised_as_their_standalone_learners(tmp_path, mixer):
    learners = [make_learner(tmp_path / str(s), mixer, seed=s) for s in range(2)]
    batches = [random_batch(seed=s) for s in range(2)]
    want = [learner.loss(b) for learner, b in zip(learners, batches)]
    losses, stats = VectorLearner(learners).loss(stack_batches(batches))
    for s, (loss, st) in enumerate(want):
        torch.testing.assert_close(losses[s], loss.detach(), rtol=1e-4, atol=1e-5)
        assert set(stats) == set(st)
        for k, v in st.items():
            torch.testing.assert_close(stats[k][s], v, rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")


# --- configs --------------------------------------------------------------------------------------
def resolved(*overrides: str) -> dict:
    return OmegaConf.to_container(compose(["run_dir=/tmp/x", *overrides]), resolve=True)


@pytest.mark.parametrize("preset", ["default", "two_step_paper", "pymarl2", "epymarl"])
def test_new_mixers_change_only_the_mixer_subtree(preset):
    base = resolved("mixer=vdn", f"preset={preset}")
    base.pop("mixer")
    for name in NEW:
        cfg = resolved(f"mixer={name}", f"preset={preset}")
        assert cfg.pop("mixer")["name"] == name
        assert cfg == base


def test_wandb_names_the_new_mixers_and_groups_their_seeds(tmp_path):
    ids = {(m, s): wandb_identity(run_config(tmp_path, "env=climbing", f"mixer={m}", f"seed={s}"), run_dir=tmp_path)
           for m in NEW for s in (0, 1)}
    for m in NEW:
        first, second = ids[m, 0], ids[m, 1]
        assert first["group"] == second["group"] and first["group"].startswith(f"climbing-{m}-")
        assert (first["name"], first["job_type"]) == (f"climbing-{m}-seed0", m) and m in first["tags"]
    assert len({ids[m, 0]["group"] for m in NEW}) == len(NEW)
    other = wandb_identity(run_config(tmp_path, "env=climbing", "mixer=ow_qmix", "mixer.alpha=0.5"), run_dir=tmp_path)
    assert other["group"] != ids["ow_qmix", 0]["group"]  # alpha is part of the experiment
