"""A guard against silent divergence: a learned value that no sound learner can reach.

Every TD target is ``r + γ·V'``, so the values of a sound learner, which start near 0, stay within
the discounted sums of the rewards it learns from: ``[min(r_min, 0), max(r_max, 0)] / (1 - γ)`` on
the reward scale the learner sees (standardised where ``learner.standardise_rewards`` is on); on
MPE, where every reward is negative, no value above 0. A value estimate can run away while
staying finite: QMIX on MPE simple_spread with the bootstrap at the time limit reaches Q_tot +300
although every MPE reward is negative (docs/results.md). The non-finite check (invariant 8)
never fires on that, so the run would report a bad number as a result.

:class:`ValueGuard` keeps the smallest and largest reward of the real steps of every collected
episode, and at each training log compares the window's mean learned value (``q_taken_mean``:
Q_tot for QMIX and VDN, each agent's Q for independent learners, which also regress on the team
reward) with that bound, widened on each side by ``faults.value_bound_margin`` times its width. A breach is recorded in ``metrics.jsonl``
(:data:`marl.run_folder.VALUE_BOUND_KEY` and the bound), said once on the console, listed by
``marl.report`` and ``marl.watch``, and with ``faults.value_bound=fail`` stops the run as a
failure, as a non-finite loss does (docs/faults.md). Until the rewards seen span a range (all
zero so far, say, as on LBF before the first food), there is no bound to check against.

Cost: one min/max over each batch of finished episodes and one comparison per log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from marl.reward_scaling import RunningMeanStd


@dataclass
class ValueGuard:
    """The reward range seen so far and the bound it implies. ``warned``: the breach was said."""

    gamma: float
    margin: float
    r_min: float = math.inf
    r_max: float = -math.inf
    warned: bool = False

    def observe(self, reward: torch.Tensor, filled: torch.Tensor) -> None:
        """Take in the real steps' rewards of finished episodes (``[B, T]``, raw scale)."""
        real = reward[filled]
        if real.numel():
            lo, hi = torch.aminmax(real)
            self.r_min, self.r_max = min(self.r_min, float(lo)), max(self.r_max, float(hi))

    def bound(self, scaling: RunningMeanStd | None = None) -> tuple[float, float] | None:
        """``(low, high)`` that a sound learner's values stay within, margin included, on the scale
        the learner sees (``scaling``: its reward standardisation); None while there is none."""
        if self.r_min > self.r_max or self.gamma >= 1.0:
            return None
        lo, hi = self.r_min, self.r_max
        if scaling is not None:  # standardisation is affine with a positive scale: order is kept
            lo, hi = scaling.normalise(torch.tensor([lo, hi], dtype=torch.float64)).tolist()
        # 0 is in the range too: values start near it, and every target mixes rewards into it.
        lo, hi = min(lo, 0.0) / (1.0 - self.gamma), max(hi, 0.0) / (1.0 - self.gamma)
        width = hi - lo
        if width == 0.0:
            return None
        return lo - self.margin * width, hi + self.margin * width

    def breach(self, value: float, scaling: RunningMeanStd | None = None) -> tuple[float, float] | None:
        """The bound that ``value`` lies outside of, or None when it is within (or there is none)."""
        bound = self.bound(scaling)
        if bound is None or bound[0] <= value <= bound[1]:
            return None
        return bound

    def state_dict(self) -> dict[str, Any]:
        return {"r_min": self.r_min, "r_max": self.r_max, "warned": self.warned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.r_min, self.r_max, self.warned = float(state["r_min"]), float(state["r_max"]), bool(state["warned"])
