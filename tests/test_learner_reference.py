"""The sequence learner computes the same loss and gradients as the step-by-step reference."""

import pytest
import torch

from marl.envs.base import EnvSpec
from marl.learner import Learner
from marl.policy import Policy
from marl.registry import MIXERS

import helpers
from helpers import run_config
from reference_learner import reference_loss

SPEC = EnvSpec(n_agents=3, obs_dim=5, state_dim=7, n_actions=4, episode_limit=9)


def random_batch():
    return helpers.random_batch(SPEC, [9, 9, 5, 3, 1, 7])


@pytest.mark.parametrize("mixer", ["qmix", "vdn", "none"])
@pytest.mark.parametrize("extra", [[], ["learner.td_lambda=0.6"], ["learner.double_q=false"], ["agent=mlp"]])
def test_sequence_learner_matches_step_by_step_reference(tmp_path, mixer, extra):
    torch.manual_seed(0)
    cfg = run_config(tmp_path, f"mixer={mixer}", *extra)
    learner = Learner(Policy(SPEC, cfg.agent), MIXERS.build(cfg.mixer, n_agents=3, state_dim=7), cfg.learner,
                      torch.device("cpu"))
    for p in learner.target_policy.parameters():  # make target differ from online
        p.data.add_(0.1 * torch.randn_like(p))
    batch = random_batch()
    loss, _ = learner.loss(batch)
    grads = torch.autograd.grad(loss, learner.params)
    ref = reference_loss(learner, batch)
    ref_grads = torch.autograd.grad(ref, learner.params)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
