"""Reward standardisation (``learner.standardise_rewards``, EPyMARL's running mean/std).

The statistic is checked against a hand computation on padded batches (padding excluded), the
learner's loss against the same loss on rewards standardised by hand, and the learner's state
through a torch.save/torch.load(weights_only=True) round trip, bitwise.
"""

import io
import math
import statistics

import pytest
import torch

from marl.learner import Learner
from marl.policy import Policy
from marl.registry import MIXERS
from marl.reward_scaling import EPSILON, RunningMeanStd, statistics_mask

from helpers import run_config
from test_learner import SPEC, hand_batch

# Three padded batches [B, T]: the real steps are the first `lengths[b]` of each row.
BATCHES = [
    ([[1.0, -2.0, 0.5, 7.0], [3.0, 0.0, 0.0, 0.0]], [3, 1]),
    ([[0.0, 0.0, 10.0, 0.0], [2.5, -1.0, 4.0, 4.0], [6.0, 0.0, 0.0, 0.0]], [4, 4, 2]),
    ([[-3.0, 8.0, 1.0, 2.0]], [2]),
]


def padded(rows, lengths, pad):
    reward = torch.tensor(rows)
    filled = torch.arange(reward.shape[1]) < torch.tensor(lengths).unsqueeze(1)
    return torch.where(filled, reward, torch.tensor(pad)), filled


def hand_running_stats(batches):
    """EPyMARL's update, by hand: start at mean 0, var 1, count 1e-4; merge each batch's mean and
    unbiased variance of its real steps (Chan et al.'s parallel algorithm)."""
    mean, var, count = 0.0, 1.0, EPSILON
    history = []
    for rows, lengths in batches:
        values = [v for row, n in zip(rows, lengths) for v in row[:n]]
        n = len(values)
        b_mean, b_var = statistics.fmean(values), statistics.variance(values)
        delta = b_mean - mean
        total = count + n
        m2 = var * count + b_var * n + delta * delta * count * n / total
        mean, var, count = mean + delta * n / total, m2 / total, total
        history.append((mean, var, count))
    return history


def test_statistic_matches_the_hand_computation_on_padded_batches():
    stats = RunningMeanStd()
    for (rows, lengths), (mean, var, count) in zip(BATCHES, hand_running_stats(BATCHES)):
        stats.update(*padded(rows, lengths, 0.0))
        assert stats.mean.dtype == stats.var.dtype == stats.count.dtype == torch.float64
        assert math.isclose(stats.mean.item(), mean, rel_tol=1e-12, abs_tol=1e-12)
        assert math.isclose(stats.var.item(), var, rel_tol=1e-12)
        assert math.isclose(stats.count.item(), count, rel_tol=1e-15)
    # The counts are the real steps only (4 + 10 + 2), not the 8 + 12 + 4 slots.
    assert math.isclose(stats.count.item(), 16 + EPSILON, rel_tol=1e-15)
    x = torch.tensor([[1.0, -2.0], [0.0, 3.5]])
    want = (x.double() - mean) / math.sqrt(var)
    torch.testing.assert_close(stats.normalise(x), want.float())


def test_padded_values_change_nothing():
    """Whatever the padding holds (zeros, huge numbers, NaN), the statistics are bitwise the same."""
    results = []
    for pad in (0.0, 1e6, -42.0, float("nan")):
        stats = RunningMeanStd()
        for rows, lengths in BATCHES:
            stats.update(*padded(rows, lengths, pad))
        results.append(stats.state_dict())
    for other in results[1:]:
        for k in ("mean", "var", "count"):
            assert torch.equal(results[0][k], other[k]), k


def test_epymarls_statistics_take_in_padding_up_to_the_longest_episode():
    """``reward_stats_include_padding``: EPyMARL's statistics, where a short episode's padded steps
    count as zeros up to the batch's longest episode, and padding beyond it (a seed group's
    stacking) still counts for nothing."""
    stats = RunningMeanStd()
    epymarl_view = []
    for rows, lengths in BATCHES:
        longest = max(lengths)
        reward, filled = padded(rows, lengths, 0.0)
        extra = (reward.shape[0], 3)  # stacked further by a group: never counted, whatever it holds
        reward = torch.cat([reward, torch.full(extra, 99.0)], dim=1)
        filled = torch.cat([filled, torch.zeros(extra, dtype=torch.bool)], dim=1)
        stats.update(reward, statistics_mask(filled, include_padding=True))
        epymarl_view.append(([[v if t < n else 0.0 for t, v in enumerate(row)][:longest] for row, n in zip(rows, lengths)],
                             [longest] * len(rows)))
    mean, var, count = hand_running_stats(epymarl_view)[-1]
    assert math.isclose(stats.count.item(), 3 * 2 + 4 * 3 + 2 + EPSILON, rel_tol=1e-15)  # B x longest per batch
    assert math.isclose(count, stats.count.item(), rel_tol=1e-15)
    assert math.isclose(stats.mean.item(), mean, rel_tol=1e-12, abs_tol=1e-12)
    assert math.isclose(stats.var.item(), var, rel_tol=1e-12)
    filled = torch.tensor([[True, False], [True, True]])
    assert torch.equal(statistics_mask(filled, include_padding=False), filled)


def test_empty_and_single_step_batches():
    stats = RunningMeanStd()
    before = stats.state_dict()
    stats.update(torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.bool))  # nothing real: unchanged
    assert all(torch.equal(before[k], stats.state_dict()[k]) for k in before)
    stats.update(torch.full((1, 3), 4.0), torch.tensor([[True, False, False]]))  # one step: var 0
    total = 1 + EPSILON
    assert math.isclose(stats.mean.item(), 4.0 / total)
    assert math.isclose(stats.var.item(), (EPSILON + 16.0 * EPSILON / total) / total)


def make_learner(tmp_path, mixer, *overrides):
    """test_learner's learner (Q-values read from the observations, γ = 0.5) with ``mixer``."""
    cfg = run_config(tmp_path, f"mixer={mixer}", "learner.gamma=0.5", *overrides)
    learner = Learner(Policy(SPEC, cfg.agent), MIXERS.build(cfg.mixer, n_agents=2, state_dim=1),
                      cfg.learner, torch.device("cpu"))
    anchor = next(learner.policy.parameters())
    learner.policy.q_sequence = lambda batch: batch["obs"] + 0.0 * anchor.sum()
    learner.target_policy.q_sequence = lambda batch: batch["obs"]
    return learner


@pytest.mark.parametrize("mixer", ["vdn", "none"])  # none: every agent regresses on the team reward
def test_loss_uses_the_standardised_reward(tmp_path, mixer):
    batch = hand_batch()
    real = batch["reward"][batch["filled"]].tolist()  # [1, 10, 0, 1, 2]; the padded 50 is left out
    n, b_mean, b_var = len(real), statistics.fmean(real), statistics.variance(real)
    total = EPSILON + n
    mean = b_mean * n / total
    var = (EPSILON + b_var * n + b_mean**2 * EPSILON * n / total) / total
    by_hand = hand_batch()
    by_hand["reward"] = torch.where(by_hand["filled"], (by_hand["reward"] - mean) / math.sqrt(var), 0.0)

    on = make_learner(tmp_path, mixer, "learner.standardise_rewards=true")
    off = make_learner(tmp_path, mixer)
    loss_on, stats_on = on.loss(batch)
    loss_off, stats_off = off.loss(by_hand)
    torch.testing.assert_close(loss_on, loss_off)
    torch.testing.assert_close(stats_on["target_mean"], stats_off["target_mean"])
    assert not torch.isclose(loss_on, make_learner(tmp_path, mixer).loss(hand_batch())[0])
    # The padded reward reaches neither the statistics nor the loss.
    changed = hand_batch()
    changed["reward"][0, 2] = -1e4
    again = make_learner(tmp_path, mixer, "learner.standardise_rewards=true")
    assert torch.equal(again.loss(changed)[0], loss_on)
    assert torch.equal(again.reward_scaling.mean, on.reward_scaling.mean)


def test_off_by_default_and_no_state(tmp_path):
    learner = make_learner(tmp_path, "vdn")
    assert learner.reward_scaling is None and "reward_scaling" not in learner.state_dict()


def round_trip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, map_location="cpu", weights_only=True)  # as marl.checkpoint loads


def test_checkpoint_round_trip_is_bitwise(tmp_path):
    learner = make_learner(tmp_path, "vdn", "learner.standardise_rewards=true")
    for scale in (1.0, 3.0, -0.5):
        batch = hand_batch()
        batch["reward"] = batch["reward"] * scale + 0.25
        learner.loss(batch)
    saved = learner.state_dict()["reward_scaling"]
    restored = make_learner(tmp_path, "vdn", "learner.standardise_rewards=true")
    restored.load_state_dict(round_trip(learner.state_dict()))
    for k in ("mean", "var", "count"):
        a, b = saved[k], restored.reward_scaling.state_dict()[k]
        assert a.dtype == b.dtype == torch.float64
        assert torch.equal(a.view(torch.int64), b.view(torch.int64)), k  # the same bits
    # And the next update goes on identically.
    assert torch.equal(learner.loss(hand_batch())[0], restored.loss(hand_batch())[0])
    assert torch.equal(learner.reward_scaling.var, restored.reward_scaling.var)


def test_a_checkpoint_without_statistics_still_loads(tmp_path):
    old = make_learner(tmp_path, "vdn").state_dict()  # written before the option existed
    learner = make_learner(tmp_path, "vdn", "learner.standardise_rewards=true")
    learner.load_state_dict(round_trip(old))
    assert learner.reward_scaling.count.item() == EPSILON
