"""Many seeds in one process (``seeds_per_process``): throughput summed over members.

    python benchmarks/members.py                          # lbf, mpe, vmas; S = 1, 2, 4, 8, 16
    python benchmarks/members.py --tasks lbf --sizes 1,8 --reps 3 --seconds 5
    python benchmarks/members.py --device cuda --tasks vmas,lbf --sizes 1,16   # on a GPU machine

For each task and group size S, in a fresh process: S members (seeds 0..S-1) built as a
vectorised group, buffers warm, then
- training env steps/s summed over members: the group's loop (one policy call acts for all
  members, every member's envs step, the due gradient steps taken together);
- learner updates/s summed over members: ``VectorLearner.update`` alone, S batches per call.
Then the same S seeds as S separate one-seed processes, ``--cores`` at a time: the summed training
env steps/s of the machine when each core runs one process (what a sweep without the option
gets). Medians of ``--reps``; the group's ratios are against a plain (``seeds_per_process=1``)
run measured in the same process, interleaved with the group's measurements.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
TASKS: dict[str, list[str]] = {
    "lbf": ["env=lbf", "env.key=Foraging-8x8-2p-2f-coop-v3", "num_envs=1"],
    "mpe": ["env=mpe", "env.scenario=simple_spread", "num_envs=1"],
    "vmas": ["env=vmas", "env.scenario=balance", "num_envs=16"],
}
FIXED = ["logger.wandb.mode=disabled", "logger.console=false", "t_max=100000000", "eval.interval=100000000",
         "checkpoint.interval=100000000", "threads=1"]


def _rate(fn, seconds: float) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += fn()
    return done / (time.perf_counter() - start)


def _experiment(task: str, seed: int, run_dir: Path, device: str) -> Any:
    """A run of ``task`` with the benchmark's fixed settings (no logging, eval or checkpoints)."""
    from marl.config import compose
    from marl.experiment import Experiment

    return Experiment(compose([*TASKS[task], *FIXED, f"device={device}", f"seed={seed}", f"run_dir={run_dir}"]))


def fail(s: int, exc: Exception) -> None:
    """A benchmark member's failure ends the benchmark."""
    raise exc


def warm_group(task: str, size: int, root: Path,
               device: str = "cpu") -> tuple[list[Any], Any, Callable[[], list[int]]]:
    """A vectorised group of ``size`` members (seeds 0..size-1) in ``root``, collected until
    every member's buffer holds a batch: ``(members, vector learner, one step of the group's loop)``."""
    from marl.vector_experiment import collect_and_learn, vectorise

    shutil.rmtree(root, ignore_errors=True)
    group = [_experiment(task, s, root / str(s), device) for s in range(size)]
    vector = vectorise(group)
    live, parked = set(range(size)), {}

    def step() -> list[int]:
        return collect_and_learn(group, vector, live, fail, parked)

    batch_size = group[0].learner.cfg.batch_size
    while not all(m.buffer.can_sample(batch_size) for m in group):
        step()
    return group, vector, step


def group_worker(task: str, size: int, reps: int, seconds: float, device: str) -> dict[str, float]:
    """Summed rates of a vectorised group of ``size`` members, measured in this process."""
    root = Path("/tmp") / f"marl-bench-members-{task}-{size}"
    group, vector, step = warm_group(task, size, root, device)
    batch_size = group[0].learner.cfg.batch_size

    def training() -> int:
        before = sum(m.clock.env_steps for m in group)
        step()
        return sum(m.clock.env_steps for m in group) - before

    def updates() -> int:
        vector.update([m.sample() for m in group])
        return size

    alone = _experiment(task, 0, root / "alone", device)
    while not alone.buffer.can_sample(batch_size):
        alone._collect_and_learn()

    def alone_training() -> int:
        before = alone.clock.env_steps
        alone._collect_and_learn()
        return alone.clock.env_steps - before

    def alone_updates() -> int:
        alone.learner.update(alone.sample())
        return 1

    rates: dict[str, list[float]] = {k: [] for k in ("training", "updates", "alone_training", "alone_updates")}
    for _ in range(reps):  # interleaved, so that the ratios are measured in the same window
        rates["alone_training"].append(_rate(alone_training, seconds))
        rates["training"].append(_rate(training, seconds))
        rates["alone_updates"].append(_rate(alone_updates, seconds))
        rates["updates"].append(_rate(updates, seconds))
    for m in [*group, alone]:
        m.close()
    return {k: statistics.median(v) for k, v in rates.items()}


def single_worker(task: str, seed: int, seconds: float, device: str) -> float:
    """Training env steps/s of one standalone run (buffer warm), measured in this process."""
    run_dir = Path("/tmp") / f"marl-bench-single-{task}-{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    exp = _experiment(task, seed, run_dir, device)
    while not exp.buffer.can_sample(exp.learner.cfg.batch_size):
        exp._collect_and_learn()

    def training() -> int:
        before = exp.clock.env_steps
        exp._collect_and_learn()
        return exp.clock.env_steps - before

    rate = _rate(training, seconds)
    exp.close()
    return rate


def separate(task: str, size: int, cores: int, seconds: float, device: str) -> float:
    """Summed training env steps/s of ``size`` one-seed processes, ``cores`` at a time."""
    rates: list[float] = []
    for first in range(0, size, cores):
        procs = [subprocess.Popen([sys.executable, __file__, "--single", task, "--seed", str(s), "--seconds",
                                   str(seconds), "--device", device], stdout=subprocess.PIPE, text=True, cwd=ROOT)
                 for s in range(first, min(first + cores, size))]
        batch = [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        rates.append(sum(batch))  # the machine's rate while this batch of processes runs
    return statistics.mean(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--sizes", default="1,2,4,8,16")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--cores", type=int, default=2, help="one-seed processes run at a time")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: groups, plain runs and processes on the GPU")
    parser.add_argument("--group", help=argparse.SUPPRESS)
    parser.add_argument("--single", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.group:
        print(json.dumps(group_worker(args.group, args.size, args.reps, args.seconds, args.device)))
        return
    if args.single:
        print(single_worker(args.single, args.seed, args.seconds, args.device))
        return
    header = ("task", "S", "train env/s (sum)", "vs one plain run", "updates/s (sum)", "vs one plain run",
              f"S processes, {args.cores} at a time: train env/s", "groups / processes")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for task in args.tasks.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            proc = subprocess.run([sys.executable, __file__, "--group", task, "--size", str(size), "--reps",
                                   str(args.reps), "--seconds", str(args.seconds), "--device", args.device],
                                  capture_output=True, text=True,
                                  cwd=ROOT)
            if proc.returncode != 0:
                reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
                print(f"| {task} | {size} | unavailable: {reason[:80]} |" + " - |" * (len(header) - 3))
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            procs = statistics.median(separate(task, size, args.cores, args.seconds, args.device)
                                      for _ in range(args.reps))
            print(f"| {task} | {size} | {r['training']:,.0f} | {r['training'] / r['alone_training']:.2f}x | "
                  f"{r['updates']:.0f} | {r['updates'] / r['alone_updates']:.2f}x | {procs:,.0f} | "
                  f"{r['training'] * min(args.cores, size) / procs:.2f}x |", flush=True)
    print(f"\n'vs one plain run': against a seeds_per_process=1 run measured in the same process, interleaved."
          f"\n'groups / processes': {args.cores} such groups, one per core, against the S one-seed processes.")


if __name__ == "__main__":
    main()
