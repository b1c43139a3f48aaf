"""On a CUDA machine: does training on the GPU compute what it computes on the CPU, and how fast is it?

    python benchmarks/cuda_check.py

1. For qmix, vdn and none, one learner on the CPU and a copy on CUDA (the same weights and batch)
   give the same loss and gradients (CUDA runs ``nn.GRU``/cuDNN, the CPU the fused GRU).
2. A whole run with ``device=auto`` (two-step game, QMIX, the paper's preset) trains on CUDA and
   reaches the optimal greedy return 8.
Exits non-zero when either fails. Throughput on the GPU: ``benchmarks/throughput.py --device cuda``.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def same_update_on_cpu_and_cuda(mixer: str) -> float:
    """Largest relative difference of loss and gradients between a CPU and a CUDA learner."""
    from marl.buffers import allocate
    from marl.config import compose
    from marl.envs.base import EnvSpec
    from marl.learner import Learner
    from marl.policy import Policy
    from marl.registry import MIXERS

    torch.manual_seed(0)
    spec = EnvSpec(n_agents=3, obs_dim=10, state_dim=20, n_actions=5, episode_limit=30)
    cfg = compose([f"mixer={mixer}", "run_dir=/tmp/marl-cuda-check"])
    cpu = Learner(Policy(spec, cfg.agent), MIXERS.build(cfg.mixer, n_agents=3, state_dim=20), cfg.learner,
                  torch.device("cpu"))
    gpu = Learner(copy.deepcopy(cpu.policy), copy.deepcopy(cpu.mixer), cfg.learner, torch.device("cuda"))
    gpu.target_policy.load_state_dict(cpu.target_policy.state_dict())
    gpu.target_mixer.load_state_dict(cpu.target_mixer.state_dict())
    g = torch.Generator().manual_seed(1)
    batch = allocate(spec, 16)
    batch["obs"].normal_(generator=g)
    batch["state"].normal_(generator=g)
    batch["avail"][:] = torch.rand(batch["avail"].shape, generator=g) > 0.2
    batch["actions"].random_(0, 5, generator=g)
    batch["reward"].normal_(generator=g)
    for i in range(16):
        batch["filled"][i, : 30 - i] = True
    worst = 0.0
    losses = []
    for learner in (cpu, gpu):
        loss, _ = learner.loss({k: v.to(learner.device) for k, v in batch.items()})
        learner.optimizer.zero_grad()
        loss.backward()
        losses.append(loss.item())
    worst = abs(losses[0] - losses[1]) / max(abs(losses[0]), 1e-6)
    for p, q in zip(cpu.params, gpu.params):
        worst = max(worst, ((p.grad - q.grad.cpu()).abs().max() / p.grad.abs().max().clamp_min(1e-6)).item())
    return worst


def two_step_on_auto_device() -> float:
    from marl.run_folder import METRICS_FILE, read_records

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "launch.py", "preset=two_step_paper", "mixer=qmix", "seed=0", "device=auto",
                        f"run_dir={tmp}/run", "logger.wandb.mode=disabled"], cwd=ROOT, check=True)
        records = read_records(Path(tmp) / "run" / METRICS_FILE)
        return [r["eval/return_mean"] for r in records if "eval/return_mean" in r][-1]


def main() -> int:
    if not torch.cuda.is_available():
        print("CUDA is not available here")
        return 2
    ok = True
    for mixer in ("qmix", "vdn", "none"):
        diff = same_update_on_cpu_and_cuda(mixer)
        print(f"{mixer}: CPU vs CUDA loss and gradients, largest relative difference {diff:.2e}")
        ok &= diff < 1e-3
    final = two_step_on_auto_device()
    print(f"two-step, QMIX, device=auto on {torch.cuda.get_device_name()}: final greedy return {final}")
    ok &= abs(final - 8.0) < 1e-6
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
