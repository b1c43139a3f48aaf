"""The ``sweep_two_step`` fixture: one real local sweep shared by tests/test_wandb.py and tests/test_report.py.

``launch.py -m env=two_step mixer=qmix,vdn seed=0-2`` with the QMIX paper's two-step setting cut to
600 episodes (evaluated every 100), W&B offline. It runs once per test session. 600 episodes is
measured: with these settings every QMIX seed is greedy-optimal (return 8) from episode 300 on and
every VDN seed settles on 7 by episode 500, so the final returns separate with one evaluation of
margin.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SWEEP_SEEDS = (0, 1, 2)
SWEEP_ARGS = ("env=two_step", "mixer=qmix,vdn", f"seed={SWEEP_SEEDS[0]}-{SWEEP_SEEDS[-1]}", "preset=two_step_paper",
              "t_max=600", "eval.interval=100", "logger.wandb.mode=offline", "logger.console=false")


@dataclass(frozen=True)
class Sweep:
    path: Path          # the sweep folder (hydra.sweep.dir)
    stdout: str         # what launch.py printed (ends with the sweep summary)
    stderr: str


@pytest.fixture(scope="session")
def sweep_two_step(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    out = tmp_path_factory.mktemp("sweep_two_step")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc = subprocess.run([sys.executable, "launch.py", "-m", *SWEEP_ARGS, f"hydra.sweep.dir={out}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return Sweep(path=out, stdout=proc.stdout, stderr=proc.stderr)
