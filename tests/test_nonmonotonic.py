"""Weighted QMIX's non-monotonic game [[8,-12,-12],[-12,0,0],[-12,0,0]] under uniform exploration
(``preset=two_step_paper``, shortened here).

QMIX's monotonic mixing cannot represent the payoff table: its fitted Q_tot misses some cell by
whole units on every seed. Which local optimum of that fit it acts on depends on the seed: over the
full preset its greedy return is 0 on seeds 0, 2, 3, 5-9 and 8 on seeds 1 and 4 (VDN: 0 on all
ten; docs/results.md, "Beyond monotonic mixing"), so only the misfit is asserted here.

OW-QMIX, CW-QMIX and QPLEX return 8 on all ten seeds there: the Weighted QMIXes with Q_tot's
argmax at the optimum and their unrestricted Q* fitting the payoff, QPLEX with Q_tot fitting the
payoff itself. The learning checks below run seed 0 of each, shortened.
"""

import pytest
import torch

from marl.buffers import allocate
from marl.checkpoint import CHECKPOINT_FILE, load
from marl.experiment import run
from marl.mixers import bind
from marl.policy import Policy
from marl.qtable import q_tables
from marl.registry import ENVS, MIXERS

from helpers import final_eval, run_config

PAYOFF = torch.tensor([[8.0, -12.0, -12.0], [-12.0, 0.0, 0.0], [-12.0, 0.0, 0.0]])


def train(tmp_path, mixer: str, seed: int, episodes: int):
    cfg = run_config(tmp_path, "preset=two_step_paper", "env=nonmonotonic", f"mixer={mixer}", f"seed={seed}",
                     f"t_max={episodes}")
    run(cfg)
    return cfg, torch.tensor(q_tables(tmp_path)["tables"]["matrix"]["q_tot"])


def joint_value_table(cfg, run_dir) -> torch.Tensor:
    """Weighted QMIX's unrestricted Q*(s, a) for every joint action of the one-step game."""
    env = ENVS.build(cfg.env, num_envs=1, seed=0)
    spec = env.spec
    mixer = MIXERS.build(cfg.mixer, n_agents=spec.n_agents, state_dim=spec.state_dim)
    bind(mixer, Policy(spec, cfg.agent))
    mixer.load_state_dict(load(run_dir / CHECKPOINT_FILE)["learner"]["mixer"])
    ts, A = env.reset(), spec.n_actions
    joint = torch.cartesian_prod(torch.arange(A), torch.arange(A))
    episodes = allocate(spec, len(joint))
    episodes["obs"][:, 0], episodes["state"][:, 0], episodes["actions"][:, 0] = ts.obs[0], ts.state[0], joint
    with torch.no_grad():
        return mixer.star(episodes, episodes["actions"], episodes["state"][:, :-1], next_step=False).view(A, A)


@pytest.mark.parametrize("seed", [0, 1])
def test_qmix_never_fits_the_non_monotonic_payoff(tmp_path, seed):
    _, table = train(tmp_path, "qmix", seed, 1000)
    print(f"qmix seed {seed}: greedy return {final_eval(tmp_path)}")  # 0 or 8 by seed: not asserted
    assert (table - PAYOFF).abs().max() > 3.0  # a monotonic fit misses the table by whole units


@pytest.mark.parametrize("mixer", ["ow_qmix", "cw_qmix"])
def test_weighted_qmix_finds_the_optimum_and_its_joint_value_fits_the_payoff(tmp_path, mixer):
    cfg, table = train(tmp_path, mixer, 0, 1000)
    assert final_eval(tmp_path) == 8.0
    assert table.argmax().item() == 0  # QMIX's Q_tot still misfits the table, but peaks at (0, 0)
    torch.testing.assert_close(joint_value_table(cfg, tmp_path), PAYOFF, atol=1.5, rtol=0)


def test_qplex_finds_the_optimum_and_fits_the_payoff(tmp_path):
    _, table = train(tmp_path, "qplex", 0, 2000)
    assert final_eval(tmp_path) == 8.0
    assert table.argmax().item() == 0
    # Its own Q_tot fits the non-monotonic table (within 0.3-2.1 after 5000 episodes over ten
    # seeds, docs/results.md), where every monotonic fit there misses some cell by more than 6.
    torch.testing.assert_close(table, PAYOFF, atol=3.0, rtol=0)
