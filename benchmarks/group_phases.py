"""Where a seed group's time goes (``seeds_per_process``), phase by phase.

    python benchmarks/group_phases.py --task vmas --sizes 1,4,16
    python benchmarks/group_phases.py --task lbf --sizes 1,8 --steps 200 --reps 3

For each group size S, in this process: S members (seeds 0..S-1, the tasks and settings of
benchmarks/members.py) built as a vectorised group, buffers warm, then ``--reps`` consecutive
windows of ``--steps`` loop steps (each step: one policy call for all live members, the envs of
every member that is not parked step, and full rounds of gradient steps once every member is
parked: marl.vector_experiment.collect_and_learn). Prints the windows' median milliseconds per
member step (one collect of one member) in each phase ("collect" is a member's whole step, its
env step included), and the number of batched update calls against the member gradient steps
they took: with full rounds, S member steps per call.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from members import TASKS, warm_group

PHASES = ("act", "env step", "collect", "sample", "update")


def _timed(owner: Any, name: str, phase: str, totals: dict[str, float], calls: dict[str, int]) -> None:
    """Wrap ``owner.name`` so that its time and calls add to ``totals[phase]`` and ``calls[phase]``."""
    inner: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[phase] += time.perf_counter() - start
            calls[phase] += 1

    setattr(owner, name, wrapper)


def measure(task: str, size: int, steps: int, reps: int) -> dict[str, float]:
    """Median over ``reps`` windows of ms per member step, by phase, and update calls."""
    group, vector, step = warm_group(task, size, Path("/tmp") / f"marl-bench-phases-{task}-{size}")
    totals: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    _timed(vector, "act", "act", totals, calls)
    _timed(vector, "update", "update", totals, calls)
    for m in group:
        _timed(m.runner.env, "step", "env step", totals, calls)
        _timed(m, "collect", "collect", totals, calls)
        _timed(m, "sample", "sample", totals, calls)
    windows = []
    for _ in range(reps):
        totals.clear()
        calls.clear()
        grad_before = sum(m.clock.grad_steps for m in group)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        wall = time.perf_counter() - start
        collected = calls["collect"]  # member steps: steps * size, less the steps members sat parked
        row = {phase: 1000 * totals[phase] / collected for phase in PHASES}
        row["total"] = 1000 * wall / collected
        row["update calls"] = calls["update"]
        row["member steps"] = sum(m.clock.grad_steps for m in group) - grad_before
        windows.append(row)
    for m in group:
        m.close()
    return {k: statistics.median(w[k] for w in windows) for k in windows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="vmas", choices=sorted(TASKS))
    parser.add_argument("--sizes", default="1,4,16")
    parser.add_argument("--steps", type=int, default=100, help="loop steps per window")
    parser.add_argument("--reps", type=int, default=3, help="windows; the table shows their medians")
    args = parser.parse_args()
    print(f"{args.task}: ms per member step (median of {args.reps} windows of {args.steps} steps)\n")
    print("| S | " + " | ".join(PHASES) + " | total | update calls | member grad steps |")
    print("|---" * (len(PHASES) + 4) + "|")
    for size in (int(s) for s in args.sizes.split(",")):
        row = measure(args.task, size, args.steps, args.reps)
        cells = [f"{row[p]:.1f}" for p in (*PHASES, "total")]
        print(f"| {size} | " + " | ".join(cells) + f" | {row['update calls']:.0f} | {row['member steps']:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
