"""Reproduce Table 1 of the QMIX paper on the two-step game, for three seeds.

QMIX learns Q_tot(state 1) ≈ [[6.93, 6.93], [7.92, 7.92]] and Q_tot(2B) ≈ [[0, 1], [1, 8]] and so
greedily earns 8; VDN's additive fit of 2B peaks below 7, so it goes to 2A and earns 7. A VDN fit
would miss the QMIX tolerances (its state-1 row for 2B is below 7), and a broken QMIX (no abs, no
state) would miss the 2B table.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from marl.qtable import q_tables

from helpers import final_eval

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_step")
    proc = subprocess.run(
        [sys.executable, "launch.py", "-m", "preset=two_step_paper", "mixer=qmix,vdn", f"seed={SEEDS[0]}-{SEEDS[-1]}",
         "logger.wandb.mode=disabled", "logger.console=false", f"hydra.sweep.dir={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {}
    for d in out.glob("*_mixer=*"):
        mixer, seed = d.name.split("_", 1)[1].replace("mixer=", "").split(",seed=")
        runs[mixer, int(seed)] = d
    assert len(runs) == 2 * len(SEEDS), sorted(runs)
    return runs


@pytest.mark.parametrize("seed", SEEDS)
def test_qmix_reproduces_the_paper_table(sweep, seed):
    """Cell by cell, with the tolerance each cell's training noise allows.

    Measured over seeds 0-4 (Intel Xeon; an AMD EPYC gives other values for the same seeds): state
    1's rows 6.75-7.10 and 7.74-8.16, their difference 0.94-1.07 (paper 0.99); 2B's cells 0, 1, 1
    within 0.05, and its 8-cell 7.67-8.12: the largest target carries the most SGD noise at the
    last update. A VDN fit (2B peaks below 7), a mixer without the state (2A and 2B mixed) or
    without abs (no monotonic fit) misses these by whole units.
    """
    run_dir = sweep["qmix", seed]
    assert final_eval(run_dir) == 8.0
    tables = q_tables(run_dir)["tables"]
    state1 = torch.tensor(tables["state 1"]["q_tot"])
    torch.testing.assert_close(state1, torch.tensor([[6.93, 6.93], [7.92, 7.92]]), atol=0.3, rtol=0)
    assert (state1[:, 0] - state1[:, 1]).abs().max() < 0.05  # agent 2's first action does not matter
    assert abs((state1[1] - state1[0]).mean() - 0.99) < 0.15  # choosing 2B is worth ~one unit more
    b = torch.tensor(tables["state 2B"]["q_tot"])
    torch.testing.assert_close(b.flatten()[:3], torch.tensor([0.0, 1.0, 1.0]), atol=0.1, rtol=0)
    assert abs(b[1, 1].item() - 8.0) < 0.4 and b.argmax().item() == 3


@pytest.mark.parametrize("seed", SEEDS)
def test_vdn_settles_for_seven(sweep, seed):
    run_dir = sweep["vdn", seed]
    assert final_eval(run_dir) == 7.0
    tables = q_tables(run_dir)["tables"]
    assert max(max(row) for row in tables["state 2B"]["q_tot"]) < 7.0
    state1 = torch.tensor(tables["state 1"]["q_tot"])
    assert state1[0].max() > state1[1].max()  # 2A looks better to VDN


def test_qtable_command_prints_table_and_json(sweep):
    run_dir = sweep["qmix", SEEDS[0]]
    text = subprocess.run([sys.executable, "-m", "marl.qtable", str(run_dir)], capture_output=True, text=True,
                          check=True).stdout
    assert "state 2B" in text and "mixer=qmix" in text
    js = subprocess.run([sys.executable, "-m", "marl.qtable", str(run_dir), "--json"], capture_output=True,
                        text=True, check=True).stdout
    import json

    assert set(json.loads(js)["tables"]) == {"state 1", "state 2A", "state 2B"}
