"""The guard against silent divergence (marl.value_guard, ``faults.value_bound``).

The bound against hand computations (raw and standardised rewards, padding ignored), its state
through a weights-only checkpoint round trip, and on real runs: a learner whose value runs away
is recorded, said once, listed by the report and the viewer, and with ``faults.value_bound=fail``
stopped as failed with its last checkpoint kept; a healthy run of the same length is not flagged.
"""

from __future__ import annotations

import io
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import read_metrics
from marl import run_folder
from marl.reward_scaling import RunningMeanStd
from marl.value_guard import ValueGuard

ROOT = Path(__file__).resolve().parents[1]


def test_bound_by_hand_and_padding_ignored():
    guard = ValueGuard(gamma=0.9, margin=0.1)
    assert guard.bound() is None  # no reward seen: nothing to check against
    reward = torch.tensor([[-3.0, -0.5, 99.0], [-1.0, -2.0, -2.0]])
    filled = torch.tensor([[True, True, False], [True, True, True]])  # 99 is padding
    guard.observe(reward, filled)
    assert (guard.r_min, guard.r_max) == (-3.0, -0.5)
    # [min(-3, 0), max(-0.5, 0)] / (1 - 0.9) = [-30, 0], width 30, margin 3 each side.
    lo, hi = guard.bound()
    assert math.isclose(lo, -33.0) and math.isclose(hi, 3.0)
    assert guard.breach(-20.0) is None and guard.breach(2.9) is None
    assert guard.breach(3.1) is not None and guard.breach(-33.5) is not None  # every reward < 0, yet Q > 0


def test_bound_on_the_standardised_scale():
    guard = ValueGuard(gamma=0.5, margin=0.0)
    guard.observe(torch.tensor([[1.0, 5.0]]), torch.tensor([[True, True]]))
    scaling = RunningMeanStd()
    scaling.mean, scaling.var = torch.tensor(2.0, dtype=torch.float64), torch.tensor(4.0, dtype=torch.float64)
    # Standardised: (1 - 2)/2 = -0.5 and (5 - 2)/2 = 1.5; / (1 - 0.5): [-1, 3].
    lo, hi = guard.bound(scaling)
    assert math.isclose(lo, -1.0) and math.isclose(hi, 3.0)
    assert guard.breach(3.5, scaling) == (lo, hi) and guard.breach(2.5, scaling) is None


def test_no_bound_without_a_range_or_without_discounting():
    zeros = ValueGuard(gamma=0.99, margin=0.1)
    zeros.observe(torch.zeros(2, 4), torch.ones(2, 4, dtype=torch.bool))  # LBF before the first food
    assert zeros.bound() is None and zeros.breach(5.0) is None
    undiscounted = ValueGuard(gamma=1.0, margin=0.1)
    undiscounted.observe(torch.tensor([[1.0]]), torch.tensor([[True]]))
    assert undiscounted.bound() is None


def test_state_round_trips_through_a_weights_only_checkpoint():
    guard = ValueGuard(gamma=0.99, margin=0.1, warned=True)
    guard.observe(torch.tensor([[-2.0, 0.25]]), torch.tensor([[True, True]]))
    buf = io.BytesIO()
    torch.save({"value_guard": guard.state_dict(), "empty": ValueGuard(0.99, 0.1).state_dict()}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    again, empty = ValueGuard(gamma=0.99, margin=0.1), ValueGuard(gamma=0.99, margin=0.1)
    again.load_state_dict(loaded["value_guard"])
    empty.load_state_dict(loaded["empty"])
    assert again == guard and empty.bound() is None


def test_status_and_report_list_a_value_out_of_bounds(tmp_path):
    """The run folder's one status rule carries the warning; the report lists it beside the run."""
    from marl.report import compare
    from marl.report.markdown import to_markdown

    proc = subprocess.run([sys.executable, "launch.py", "env=two_step", "mixer=vdn", "t_max=400",
                           "eval.interval=200", "eval.episodes=4", "logger.interval=100", "logger.wandb.mode=disabled",
                           f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert run_folder.status(tmp_path).warning == ""
    # A record as the guard writes it, appended to the real run's metrics.
    with open(tmp_path / run_folder.METRICS_FILE, "a") as f:
        f.write('{"env_steps": 300, "q_taken_mean": 41.5, "value_out_of_bounds": 1.0, '
                '"value_bound_low": -1.0, "value_bound_high": 9.0}\n')
    warning = run_folder.status(tmp_path).warning
    assert "env_steps=300" in warning and "41.5" in warning and "[-1, 9]" in warning
    assert warning in to_markdown(compare([tmp_path]))


def test_fail_mode_stops_the_run_as_failed_and_keeps_its_last_checkpoint(tmp_path, monkeypatch):
    """The wiring of ``faults.value_bound=fail`` on a real run, with the bound narrowed to a sliver
    around 0 after the first checkpoint so that the run's next log is out of it: the run stops with
    ValueBoundError, is recorded as failed in every place, and its checkpoint is the last good one."""
    from helpers import run_config
    from marl import checkpoint as ckpt
    from marl.errors import ValueBoundError
    from marl.experiment import run

    real_bound = ValueGuard.bound

    def narrowed(self, scaling=None):
        return (-1e-12, 1e-12) if self.r_min <= self.r_max and state["saved"] else real_bound(self, scaling)

    state = {"saved": False}
    real_save = ckpt.save_atomic

    def save(obj, path):
        real_save(obj, path)
        state["saved"] = True

    monkeypatch.setattr(ValueGuard, "bound", narrowed)
    monkeypatch.setattr("marl.experiment.save_atomic", save)
    cfg = run_config(tmp_path, "env=two_step", "mixer=qmix", "t_max=2000", "checkpoint.interval=400",
                     "logger.interval=100", "eval.interval=1000", "faults.value_bound=fail")
    with pytest.raises(ValueBoundError, match="q_taken_mean=.* outside"):
        run(cfg)
    records = read_metrics(tmp_path)
    assert records[-1]["status"] == "failed" and "ValueBoundError" in records[-1]["reason"]
    breach = next(r for r in records if r.get(run_folder.VALUE_BOUND_KEY))
    status = run_folder.status(tmp_path)
    assert status.state == run_folder.FAILED and status.warning
    kept = ckpt.load(tmp_path / ckpt.CHECKPOINT_FILE)["clock"]["env_steps"]
    assert kept == 400 < breach["env_steps"]
