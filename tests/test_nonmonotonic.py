"""A known limit, shown rather than fixed: QMIX's monotonic mixing cannot represent the payoff 8 of
Weighted QMIX's non-monotonic game [[8,-12,-12],[-12,0,0],[-12,0,0]] under uniform exploration;
it settles for a joint action worth 0."""

import torch

from marl.experiment import run
from marl.qtable import q_tables

from helpers import final_eval, run_config


def test_qmix_cannot_represent_the_non_monotonic_optimum(tmp_path):
    run(run_config(tmp_path, "preset=two_step_paper", "env=nonmonotonic", "mixer=qmix", "t_max=2000"))
    assert final_eval(tmp_path) == 0.0  # not 8: the greedy joint action is in the zero block
    table = torch.tensor(q_tables(tmp_path)["tables"]["matrix"]["q_tot"])
    assert table[0, 0] < table[1:, 1:].max() - 3.0  # the 8 is valued far below the zeros
    assert table[1:, 1:].abs().max() < 1.0  # while the zero block is fitted
