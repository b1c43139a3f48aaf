"""Throughput benchmark: is training limited by the environment and the update, or by overhead?

    python benchmarks/throughput.py                       # all tasks, 3 repetitions, medians
    python benchmarks/throughput.py --tasks climbing,lbf --reps 5
    python benchmarks/throughput.py --threads 2           # a run that may use two cores

For each task, with PyMARL's default QMIX settings (one gradient step of 32 episodes per
collected episode), in a fresh process per task:

- raw env steps/s: the env alone, random valid actions, the same batching;
- acting steps/s: policy + env + episode staging + buffer writes, no learning;
- training steps/s: the full loop (acting + one update per finished episode), buffer warm;
- updates/s and ms/update: the learner alone on batches from that buffer;
- phase split per env step (env / policy+buffer / learning), and peak resident memory;
- on the CPU, the arithmetic floor of an update: its matmul FLOPs (counted by torch's
  FlopCounterMode) over this core's measured GEMM rate, and the best train/raw ratio that floor
  allows even with free acting: what "limited by the arithmetic of the update" means in numbers.

Then the learner microbenchmark of issue "Fast training": batch 32 episodes x 50 steps, 2
agents, GRU 64, QMIX, double Q, target pass included, on one thread, against the step-by-step
reference kept in tests/reference_learner.py. Medians of ``--reps`` runs; the machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TASKS: dict[str, list[str]] = {
    "two_step": ["env=two_step", "num_envs=64"],
    "climbing": ["env=climbing", "num_envs=64"],
    "lbf": ["env=lbf", "env.key=Foraging-8x8-2p-2f-coop-v3", "num_envs=8"],
    "mpe": ["env=mpe", "env.scenario=simple_spread", "num_envs=8"],
    "smax": ["env=smax", "env.map=3m", "num_envs=64"],
    "vmas": ["env=vmas", "env.scenario=balance", "num_envs=64"],
}


def _rate(fn, min_seconds: float) -> float:
    """Calls ``fn`` (returning env steps done) until ``min_seconds`` pass; returns steps/s."""
    steps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds or steps == 0:
        steps += fn()
    return steps / elapsed


def gemm_gflops(repeats: int = 30) -> float:
    """This process's matmul rate at its torch thread count: median over [512 x 512] products."""
    import torch

    a, b, out = torch.randn(512, 512), torch.randn(512, 512), torch.empty(512, 512)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - start)
    return 2 * 512**3 / statistics.median(times[5:]) / 1e9


def update_gflop(learner, batch) -> float:
    """Matmul GFLOP of one update on ``batch``. FlopCounterMode sees ATen ops only, so the count
    runs the agent's nn.GRU path (the fused CPU GRU does the same matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    from marl.agents import gru_sequence

    available = gru_sequence.available
    gru_sequence.available = lambda: False
    try:
        with FlopCounterMode(display=False) as counter:
            learner.update(batch)
    finally:
        gru_sequence.available = available
    return counter.get_total_flops() / 1e9


def worker(task: str, reps: int, seconds: float, threads: int, device: str) -> dict[str, float]:
    """Measure one task in this process (so peak memory is the task's own)."""
    import torch

    from marl.config import compose
    from marl.experiment import Experiment
    from marl.policy import select_actions

    run_dir = Path("/tmp") / f"marl-bench-{task}"
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = compose([*TASKS[task], f"run_dir={run_dir}", "logger.wandb.mode=disabled", "logger.console=false",
                   "t_max=100000000", "eval.interval=100000000", "checkpoint.interval=100000000", f"threads={threads}",
                   f"device={device}"])
    exp = Experiment(cfg)
    env, runner, B = exp.env, exp.runner, cfg.num_envs
    gen = torch.Generator().manual_seed(0)
    results: dict[str, list[float]] = {k: [] for k in ("raw", "acting", "training", "updates")}

    def raw_step() -> int:
        ts = raw_step.ts
        dummy_q = torch.zeros(ts.avail.shape)
        nxt = env.step(select_actions(dummy_q, ts.avail, 1.0, gen))
        done = nxt.done
        raw_step.t += 1
        if done.any():
            nxt = env.reset(done)
        raw_step.ts = nxt
        return B

    def acting_step() -> int:
        res = runner.step(epsilon=1.0)
        if res.episodes is not None:
            exp.buffer.insert(res.episodes)
        return B

    def training_step() -> int:
        before = exp.clock.env_steps
        exp._collect_and_learn()
        return exp.clock.env_steps - before

    batch_size = cfg.learner.batch_size
    for _ in range(reps):
        raw_step.ts, raw_step.t = env.reset(), 0
        results["raw"].append(_rate(raw_step, seconds))
        runner.reset()
        results["acting"].append(_rate(acting_step, seconds))
        while not exp.buffer.can_sample(batch_size):
            acting_step()
        runner.reset()
        results["training"].append(_rate(training_step, seconds))

        def update() -> int:
            exp.learner.update(exp.buffer.sample(batch_size, exp.generators["sample"]))
            if exp.device.type == "cuda":
                torch.cuda.synchronize()
            return 1

        results["updates"].append(_rate(update, seconds))
    med = {k: statistics.median(v) for k, v in results.items()}
    lengths = exp.buffer.lengths[: exp.buffer.size].float()
    med["episode_len"] = float(lengths.mean())
    med["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    med["num_envs"] = B
    if exp.device.type == "cpu":  # measured last: the counted update changes the learner
        med["gemm_gflops"] = gemm_gflops()
        med["update_gflop"] = update_gflop(exp.learner, exp.buffer.sample(batch_size, exp.generators["sample"]))
    exp.env.close()
    exp.eval_env.close()
    return med


def learner_micro(reps: int, threads: int, device: str) -> dict[str, float]:
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from reference_learner import reference_loss

    from marl.buffers import allocate
    from marl.config import compose
    from marl.envs.base import EnvSpec
    from marl.learner import Learner
    from marl.policy import Policy
    from marl.registry import MIXERS

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = EnvSpec(n_agents=2, obs_dim=30, state_dim=60, n_actions=6, episode_limit=50)
    cfg = compose(["run_dir=/tmp/marl-bench-learner"])
    learner = Learner(Policy(spec, cfg.agent), MIXERS.build(cfg.mixer, n_agents=2, state_dim=60), cfg.learner,
                      torch.device(device))
    batch = allocate(spec, 32)
    batch["obs"].normal_()
    batch["state"].normal_()
    batch["avail"][:] = True
    batch["filled"][:] = True
    batch["actions"].random_(0, 6)
    batch["reward"].normal_()
    batch = {k: v.to(device) for k, v in batch.items()}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def reference_update() -> None:
        loss = reference_loss(learner, batch)
        learner.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(learner.params, 10.0)
        learner.optimizer.step()

    out = {}
    for name, fn in (("sequence", lambda: learner.update(batch)), ("reference", reference_update)):
        fn()
        times = []
        for _ in range(max(reps, 3) * 5):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t)
        out[name] = 1000 * statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each timed phase")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of the run (config key threads)")
    parser.add_argument("--device", default="cpu", help="device of the runs (config key device): cpu, cuda, auto")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--learner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.reps, args.seconds, args.threads, args.device)))
        return
    if args.learner:
        print(json.dumps(learner_micro(args.reps, args.threads, args.device)))
        return

    header = ("task", "B", "ep len", "raw env/s", "acting/s", "training/s", "train/raw", "updates/s",
              "ms/update", "env us/step", "act us/step", "learn us/step", "peak MB")
    rows, floors = [], []
    for task in args.tasks.split(","):
        proc = subprocess.run([sys.executable, __file__, "--worker", task, "--reps", str(args.reps), "--seconds",
                               str(args.seconds), "--threads", str(args.threads), "--device", args.device],
                              capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
            rows.append((task, "-", "-", f"unavailable: {reason[:60]}", *["-"] * (len(header) - 4)))
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        env_us, act_us, train_us = 1e6 / r["raw"], 1e6 / r["acting"], 1e6 / r["training"]
        rows.append((task, int(r["num_envs"]), f"{r['episode_len']:.1f}", f"{r['raw']:,.0f}", f"{r['acting']:,.0f}",
                     f"{r['training']:,.0f}", f"{r['training'] / r['raw']:.0%}", f"{r['updates']:.0f}",
                     f"{1000 / r['updates']:.1f}", f"{env_us:.1f}", f"{act_us - env_us:.1f}",
                     f"{train_us - act_us:.1f}", f"{r['peak_mb']:.0f}"))
        if "update_gflop" in r:
            floor_ms = 1000 * r["update_gflop"] / r["gemm_gflops"]
            floor_us_per_step = 1000 * floor_ms / r["episode_len"]  # one update per episode
            floors.append((task, f"{r['update_gflop']:.3f}", f"{r['gemm_gflops']:.0f}", f"{floor_ms:.1f}",
                           f"{1000 / r['updates']:.1f}", f"{floor_ms * r['updates'] / 1000:.0%}",
                           f"{env_us / (env_us + floor_us_per_step):.0%}",
                           f"{env_us / (act_us + floor_us_per_step):.0%}"))
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    if floors:
        print("\nArithmetic floor of one update on this core (one gradient step per episode; matmul FLOPs only):")
        header = ("task", "GFLOP/update", "GEMM GFLOP/s", "floor ms/update", "measured ms/update",
                  "floor/measured", "train/raw at the floor, free acting", "... with measured acting")
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in floors:
            print("| " + " | ".join(row) + " |")
    print(f"\nLearner update on {args.device}, batch 32 x 50 steps, 2 agents, GRU 64, QMIX, double Q, target pass:")
    for threads in sorted({1, args.threads}):
        proc = subprocess.run([sys.executable, __file__, "--learner", "--reps", str(args.reps), "--threads",
                               str(threads), "--device", args.device], capture_output=True, text=True, cwd=ROOT,
                              check=True)
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  {threads} thread{'s' * (threads > 1)}: sequence learner {m['sequence']:.1f} ms | step-by-step "
              f"reference {m['reference']:.1f} ms | speed-up {m['reference'] / m['sequence']:.1f}x")

if __name__ == "__main__":
    main()
