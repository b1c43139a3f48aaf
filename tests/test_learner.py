"""Targets and masks on a hand-computed padded episode batch, TD(lambda), and the sequence learner.

The agent is replaced by a function that reads Q-values straight from the observations, so every
number below can be checked by hand (γ = 0.5, VDN mixing).
"""

import torch

from marl.buffers import allocate
from marl.envs.base import EnvSpec
from marl.learner import Learner, lambda_returns
from marl.policy import Policy
from marl.registry import MIXERS

from helpers import run_config

SPEC = EnvSpec(n_agents=2, obs_dim=2, state_dim=1, n_actions=2, episode_limit=3)


def hand_batch():
    """Episode 0 terminates after 2 steps (then padding); episode 1 is truncated after 3 steps."""
    b = allocate(SPEC, 2)
    q = b["obs"]  # the fake agent's Q-values: obs[b, t, agent] = Q(., t, agent, :)
    q[0, 0] = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    q[0, 1] = torch.tensor([[4.0, 1.0], [0.0, 2.0]])
    q[0, 2] = 9.0  # final obs after termination: must not be bootstrapped from
    q[0, 3] = 100.0  # padding
    b["actions"][0, :2] = torch.tensor([[1, 0], [0, 1]])
    b["reward"][0] = torch.tensor([1.0, 10.0, 50.0])  # the 50 is padding
    b["terminated"][0] = torch.tensor([False, True, False])
    b["filled"][0] = torch.tensor([True, True, False])
    q[1, 0] = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    q[1, 1] = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    q[1, 2] = torch.tensor([[1.0, 3.0], [5.0, 1.0]])
    q[1, 3] = torch.tensor([[2.0, 6.0], [4.0, 0.0]])  # final obs of a truncated episode: bootstrap
    b["actions"][1] = torch.tensor([[0, 0], [0, 1], [1, 0]])
    b["reward"][1] = torch.tensor([0.0, 1.0, 2.0])
    b["filled"][1] = True
    b["avail"][:] = True
    b["avail"][1, 3, 0, 1] = False  # agent 0 cannot take its best action (6) at the final obs
    return b


def make_learner(tmp_path, *overrides):
    cfg = run_config(tmp_path, "mixer=vdn", "learner.gamma=0.5", *overrides)
    mixer = MIXERS.build(cfg.mixer, n_agents=2, state_dim=1)
    learner = Learner(Policy(SPEC, cfg.agent), mixer, cfg.learner, torch.device("cpu"))
    anchor = next(learner.policy.parameters())
    learner.policy.q_sequence = lambda batch: batch["obs"] + 0.0 * anchor.sum()
    learner.target_policy.q_sequence = lambda batch: batch["obs"]
    return learner


def test_targets_and_masks_match_the_hand_computation(tmp_path):
    learner = make_learner(tmp_path)
    loss, stats = learner.loss(hand_batch())
    # Episode 0: Q_tot = 5, 6; y0 = 1 + .5 * (4 + 2) = 4; y1 = 10 (terminated): td = 1, -4.
    # Episode 1: Q_tot = 1, 2, 8; y0 = 0 + .5 * (2 + 0) = 1; y1 = 1 + .5 * (3 + 5) = 5;
    #            y2 = 2 + .5 * (2 + 4) = 5 (bootstraps, masked action skipped): td = 0, -3, 3.
    assert torch.isclose(loss, torch.tensor((1 + 16 + 0 + 9 + 9) / 5))
    assert torch.isclose(stats["target_mean"], torch.tensor((4 + 10 + 1 + 5 + 5) / 5))


def test_time_limit_end_bootstraps_or_not_and_terminations_never_do(tmp_path):
    # The hand batch of the test above, with the padding of episode 0 made loud: a padded step
    # marked terminated, so a rule that read padding would move the loss.
    batch = hand_batch()
    batch["terminated"][0, 2] = True
    bootstrap = make_learner(tmp_path)
    terminal = make_learner(tmp_path, "learner.time_limit_end=terminal")
    loss_b, stats_b = bootstrap.loss(batch)
    loss_t, stats_t = terminal.loss(batch)
    # Bootstrap: episode 1's time-limit end y2 = r + γ·V(s_T) = 2 + .5 * (2 + 4) = 5 (as above).
    # Terminal: y2 = r = 2, so td = 8 - 2 = 6. Episode 0 terminated: y1 = 10 in both.
    assert torch.isclose(loss_b, torch.tensor((1 + 16 + 0 + 9 + 9) / 5))
    assert torch.isclose(stats_b["target_mean"], torch.tensor((4 + 10 + 1 + 5 + 5) / 5))
    assert torch.isclose(loss_t, torch.tensor((1 + 16 + 0 + 9 + 36) / 5))
    assert torch.isclose(stats_t["target_mean"], torch.tensor((4 + 10 + 1 + 5 + 2) / 5))
    # Padding changes nothing: fill episode 0's padded slots with other numbers.
    noisy = hand_batch()
    noisy["reward"][0, 2], noisy["obs"][0, 3], noisy["terminated"][0, 2] = -1e3, -7.0, False
    for learner, loss in ((bootstrap, loss_b), (terminal, loss_t)):
        assert torch.equal(learner.loss(noisy)[0], loss)


def test_double_q_picks_with_online_and_evaluates_with_target(tmp_path):
    learner = make_learner(tmp_path)
    # Target net prefers the other action everywhere; double Q must still evaluate online's pick.
    learner.target_policy.q_sequence = lambda batch: batch["obs"].flip(-1)
    batch = hand_batch()
    _, stats = learner.loss(batch)
    # Online argmaxes, evaluated on the flipped target values:
    # ep 0, t1: online picks (0, 1) -> target [1,4][0] + [2,0][1] = 1 + 0      -> y0 = 1.5
    # ep 1, t1: online picks (0, 0) -> target [0,2][0] + [0,0][0] = 0          -> y0 = 0
    # ep 1, t2: online picks (1, 0) -> target [3,1][1] + [1,5][0] = 1 + 1      -> y1 = 2
    # ep 1, t3: online picks (0, 0) (action 1 of agent 0 is unavailable)
    #                               -> target [6,2][0] + [0,4][0] = 6 + 0      -> y2 = 5
    learner_single = make_learner(tmp_path, "learner.double_q=false")
    learner_single.target_policy.q_sequence = learner.target_policy.q_sequence
    _, stats_single = learner_single.loss(batch)
    assert not torch.isclose(stats["target_mean"], stats_single["target_mean"])
    ys = torch.tensor([1.5, 10.0, 0.0, 2.0, 5.0])
    assert torch.isclose(stats["target_mean"], ys.mean())


def reference_lambda_returns(reward, terminated, filled, next_values, gamma, lam):
    """One episode at a time, straight from the definition of the λ-return."""
    B, T = reward.shape
    out = torch.zeros(B, T)
    for b in range(B):
        length = int(filled[b].sum())
        for t in range(length):
            # G^λ_t = (1-λ) Σ_n λ^(n-1) G^(n)_t, with the tail weight on the longest return.
            total, weight_left = 0.0, 1.0
            for n in range(1, length - t + 1):
                g, discount, ended = 0.0, 1.0, False
                for k in range(t, t + n):
                    g += discount * float(reward[b, k])
                    discount *= gamma
                    if terminated[b, k]:
                        ended = True
                        break
                if not ended:
                    g += discount * float(next_values[b, t + n - 1, 0])
                w = weight_left if n == length - t else (1 - lam) * lam ** (n - 1)
                total += w * g
                weight_left -= (1 - lam) * lam ** (n - 1)
            out[b, t] = total
    return out


def test_td_lambda_matches_the_definition():
    torch.manual_seed(0)
    B, T = 4, 6
    reward = torch.randn(B, T)
    filled = torch.zeros(B, T, dtype=torch.bool)
    terminated = torch.zeros(B, T, dtype=torch.bool)
    for b, (length, term) in enumerate([(6, False), (4, True), (2, False), (1, True)]):
        filled[b, :length] = True
        terminated[b, length - 1] = term
    next_values = torch.randn(B, T, 1)
    for lam in (0.0, 0.6, 1.0):
        got = lambda_returns(reward, terminated, filled, next_values, 0.9, lam)[..., 0] * filled
        want = reference_lambda_returns(reward, terminated, filled, next_values, 0.9, lam)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
