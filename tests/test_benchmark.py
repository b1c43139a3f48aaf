"""The benchmark's arithmetic floor counts what an update really multiplies.

benchmarks/throughput.py reports the floor of an update as its matmul FLOPs (torch's
FlopCounterMode) over the core's GEMM rate; docs/performance.md argues from it. Here the count is
checked against the layer sizes worked out by hand, so that a counter that missed the GRU (e.g.
the fused kernel, which FlopCounterMode cannot see) or a mixer would fail.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

from marl.buffers import allocate
from marl.envs.base import EnvSpec
from marl.learner import Learner
from marl.policy import Policy
from marl.registry import MIXERS

from helpers import run_config

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("throughput", ROOT / "benchmarks" / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def by_hand(spec: EnvSpec, B: int, T: int, H: int = 64, E: int = 32, He: int = 64) -> float:
    """Multiply-adds x 2 of one update: online and target forward, and the backward, in which a
    layer whose input needs no gradient (the agent's first layer, the hypernetworks' first
    layers: they read observations and the state) computes only its weight gradient."""
    n, A, S = spec.n_agents, spec.n_actions, spec.state_dim
    inp = spec.obs_dim + A + n
    rows, mix_rows = B * (T + 1) * n, B * T
    fc1, gru, fc2 = inp * H, 6 * H * H, H * A
    first = S * (He + He + E + E)  # hyper_w1[0], hyper_w2[0], hyper_b1, v[0]
    second = He * n * E + He * E + E  # hyper_w1[2], hyper_w2[2], v[2]
    agent_fwd, mixer_fwd = rows * (fc1 + gru + fc2), mix_rows * (first + second)
    agent_bwd, mixer_bwd = rows * (fc1 + 2 * (gru + fc2)), mix_rows * (first + 2 * second)
    return 2 * (2 * agent_fwd + agent_bwd + 2 * mixer_fwd + mixer_bwd) / 1e9


@pytest.mark.parametrize("n_agents,obs_dim,state_dim,n_actions,T", [(2, 12, 24, 6, 50), (3, 18, 54, 5, 25)])
def test_update_flops_match_the_layer_sizes(tmp_path, n_agents, obs_dim, state_dim, n_actions, T):
    spec = EnvSpec(n_agents=n_agents, obs_dim=obs_dim, state_dim=state_dim, n_actions=n_actions, episode_limit=T)
    cfg = run_config(tmp_path)
    torch.manual_seed(0)
    learner = Learner(Policy(spec, cfg.agent), MIXERS.build(cfg.mixer, n_agents=n_agents, state_dim=state_dim),
                      cfg.learner, torch.device("cpu"))
    batch = allocate(spec, 32)
    batch["avail"][:] = True
    batch["filled"][:] = True
    counted = load_benchmark().update_gflop(learner, batch)
    expected = by_hand(spec, 32, T)
    # The step-0 hidden state needs no gradient: nn.GRU skips that one product, ~1% of W_hh's.
    assert counted == pytest.approx(expected, rel=0.01)

