"""The per-process Python env adapters (LBF, RWARE, MPE, any PettingZoo / Gymnasium env, SMAC)
behind the batched VecEnv protocol, with the real packages."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import read_metrics, run_config
from marl import experiment
from marl.config import compose
from marl.envs.base import VecEnv
from marl.errors import ConfigError
from marl.policy import select_actions
from marl.registry import ENVS

CASES = {
    "lbf": ["env=lbf"],
    "lbf_partial": ["env=lbf", "env.key=Foraging-2s-8x8-2p-2f-coop-v3"],
    "rware": ["env=rware"],
    "mpe_spread": ["env=mpe"],
    "mpe_speaker_listener": ["env=mpe", "env.scenario=simple_speaker_listener"],
    "mpe_reference": ["env=mpe", "env.scenario=simple_reference"],
    "pettingzoo_custom": ["env=pettingzoo", "env.factory=custom_envs:TinyParallel"],
    "gymnasium_custom": ["env=gymnasium", "env.factory=custom_envs:TinyGym"],
}
FIELDS = ("obs", "state", "avail", "reward", "terminated", "truncated")


def make(overrides: list[str], num_envs: int = 4, seed: int = 0) -> VecEnv:
    return ENVS.build(compose(overrides).env, num_envs=num_envs, seed=seed)


def rollout(env: VecEnv, steps: int, seed: int = 0, actions: str = "random") -> dict[str, torch.Tensor]:
    """Step with uniformly random available actions (ε=1 through the real selector) or no-ops,
    resetting finished envs as the runner does; return every field stacked over time."""
    gen = torch.Generator().manual_seed(seed)
    ts = env.reset()
    out: dict[str, list[torch.Tensor]] = {k: [] for k in (*FIELDS, "actions", "t")}
    t = torch.zeros(env.num_envs, dtype=torch.long)
    q = torch.zeros(env.num_envs, env.spec.n_agents, env.spec.n_actions)
    for _ in range(steps):
        if actions == "random":
            a = select_actions(q, ts.avail, 1.0, gen)
        else:
            a = torch.zeros(env.num_envs, env.spec.n_agents, dtype=torch.long)
        assert ts.avail.gather(-1, a.unsqueeze(-1)).all(), "an unavailable action was chosen"
        ts = env.step(a)
        t += 1
        for k in FIELDS:
            out[k].append(getattr(ts, k))
        out["actions"].append(a)
        out["t"].append(t.clone())
        done = ts.done
        if done.any():
            ts = env.reset(done)
            t = t.masked_fill(done, 0)
    return {k: torch.stack(v) for k, v in out.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_protocol_shapes_dtypes_and_masks(case: str) -> None:
    env = make(CASES[case], num_envs=3)
    try:
        assert isinstance(env, VecEnv) and env.num_envs == 3
        s = env.spec
        ts = env.reset()
        expect = {"obs": ((3, s.n_agents, s.obs_dim), torch.float32), "state": ((3, s.state_dim), torch.float32),
                  "avail": ((3, s.n_agents, s.n_actions), torch.bool), "reward": ((3,), torch.float32),
                  "terminated": ((3,), torch.bool), "truncated": ((3,), torch.bool)}
        for k, (shape, dtype) in expect.items():
            assert getattr(ts, k).shape == shape and getattr(ts, k).dtype == dtype, k
        assert ts.avail.any(-1).all(), "every agent needs at least one available action"
        # Many random steps through the real action selector: no unavailable action is ever
        # chosen (the custom envs raise if one reaches them) and no episode outlives the limit.
        r = rollout(env, 150)
        for k, (shape, dtype) in expect.items():
            assert r[k].shape[1:] == shape and r[k].dtype == dtype, k
        assert (r["t"] <= s.episode_limit).all()
        assert not (r["terminated"] & r["truncated"]).any()
        assert env.state_dict() == {}
    finally:
        env.close()
    if case.startswith("lbf"):
        assert not r["avail"].all(), "LBF masks must actually mask something (LOAD away from food)"
    if case == "mpe_speaker_listener":  # the speaker has 3 actions of the 5 (padded), obs 3 of 11
        assert s.n_actions == 5 and s.obs_dim == 11 and s.has_state and s.state_dim == 14
        assert not r["avail"][:, :, 0, 3:].any() and r["avail"][:, :, 1].all()
        assert (r["obs"][:, :, 0, 3:] == 0).all()
    if case == "mpe_reference":
        assert s.n_actions == 50 and s.has_state
    if case == "rware":
        assert r["avail"].all() and not s.has_state and s.state_dim == 2 * s.obs_dim
    if case == "pettingzoo_custom":
        assert s.has_state and s.state_dim == 4 and not r["avail"][:, :, 0, 3].any()
        assert r["terminated"].any() and r["truncated"].any()
    if case == "gymnasium_custom":
        assert not s.has_state and not r["avail"][:, :, 1, 2].any() and r["terminated"].any()


def test_lbf_time_limit_is_truncation_and_food_gone_is_termination() -> None:
    env = make(["env=lbf"], num_envs=2)
    try:
        env.reset()
        noop = torch.zeros(2, 2, dtype=torch.long)
        for t in range(1, 51):
            ts = env.step(noop)
            assert not ts.terminated.any()
            assert ts.truncated.all() == (t == 50) and ts.truncated.any() == (t == 50)
    finally:
        env.close()
    # A small non-cooperative task where one agent can often eat alone: random play ends some
    # episodes early, always as termination, and the time limit always as truncation.
    env = make(["env=lbf", "env.key=Foraging-5x5-2p-1f-v3", "env.time_limit=20"], num_envs=8)
    try:
        r = rollout(env, 120, seed=1)
    finally:
        env.close()
    early = r["terminated"] & (r["t"] < 20)
    assert early.any(), "expected some episodes to end with all food eaten"
    assert torch.equal(r["terminated"], r["terminated"] & (r["reward"] > 0))  # the last food was eaten
    assert torch.equal(r["truncated"], (r["t"] == 20) & ~r["terminated"])


def test_lbf_masks_are_lbfs_own_or_every_action_as_epymarl_reports() -> None:
    masked, unmasked = make(["env=lbf"], num_envs=4), make(["env=lbf", "env.action_masks=false"], num_envs=4)
    try:
        r_masked, r_unmasked = rollout(masked, 60, seed=3), rollout(unmasked, 60, seed=3)
    finally:
        masked.close()
        unmasked.close()
    # LBF's masks: NONE always valid, LOAD (5) only next to food, so some actions are masked.
    assert r_masked["avail"][..., 0].all() and not r_masked["avail"].all()
    assert r_unmasked["avail"].all()
    # Without masks the agents choose actions the env ignores, and the episodes still end as LBF's.
    assert (r_unmasked["actions"] == 5).any()
    assert torch.equal(r_unmasked["truncated"], (r_unmasked["t"] == 50) & ~r_unmasked["terminated"])


def test_rware_500_steps_is_truncation() -> None:
    env = make(["env=rware"], num_envs=1)
    try:
        r = rollout(env, 500)
    finally:
        env.close()
    assert not r["terminated"].any()
    assert r["truncated"][:-1].sum() == 0 and r["truncated"][-1].all()


@pytest.mark.parametrize("case", ["lbf", "mpe_spread"])
def test_reset_only_the_masked_rows(case: str) -> None:
    env = make(CASES[case], num_envs=4)
    try:
        env.reset()
        noop = torch.zeros(4, env.spec.n_agents, dtype=torch.long)
        for _ in range(3):
            before = env.step(noop)
        mask = torch.tensor([True, False, True, False])
        after = env.reset(mask)
        for k in ("obs", "state", "avail"):
            assert torch.equal(getattr(after, k)[~mask], getattr(before, k)[~mask]), k
        assert not torch.equal(after.obs[0], before.obs[0]) and not torch.equal(after.obs[2], before.obs[2])
        # Each env keeps its own clock: the kept rows reach the time limit 3 steps earlier.
        limit = env.spec.episode_limit
        for t in range(4, limit + 1):
            ts = env.step(noop)
            assert ts.done.tolist() == [False, t == limit, False, t == limit]
        ts = env.reset(ts.done)
        for _ in range(3):
            ts = env.step(noop)
        assert ts.done.tolist() == [True, False, True, False]
        with pytest.raises(RuntimeError, match="after its episode ended"):
            env.step(noop)
    finally:
        env.close()


@pytest.mark.parametrize("case", ["lbf", "rware", "mpe_spread", "pettingzoo_custom", "gymnasium_custom"])
def test_same_seed_repeats_different_seeds_differ(case: str) -> None:
    runs = []
    for seed in (7, 7, 8):
        env = make(CASES[case], num_envs=2, seed=seed)
        try:
            runs.append(rollout(env, 60))
        finally:
            env.close()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in FIELDS)
    assert not torch.equal(runs[0]["obs"], runs[2]["obs"])
    assert not torch.equal(runs[0]["obs"][:, 0], runs[0]["obs"][:, 1]), "env copies need distinct seeds"


@pytest.mark.parametrize("case", ["lbf", "pettingzoo_custom"])
def test_worker_processes_match_in_process(case: str) -> None:
    results = []
    for workers in (0, 2):
        env = make([*CASES[case], f"env.num_workers={workers}"], num_envs=3, seed=3)
        try:
            results.append(rollout(env, 120))
        finally:
            env.close()
    for k in results[0]:
        assert torch.equal(results[0][k], results[1][k]), k


def test_worker_errors_reach_the_trainer() -> None:
    env = make(["env=gymnasium", "env.factory=custom_envs:TinyGym", "env.num_workers=1"], num_envs=2)
    try:
        env.reset()
        with pytest.raises(RuntimeError, match="masked action 2"):
            env.step(torch.tensor([[0, 2], [0, 0]]))
    finally:
        env.close()


TRAIN = {
    "lbf": ["env=lbf"],
    "rware": ["env=rware", "env.time_limit=25"],
    "mpe": ["env=mpe", "env.scenario=simple_speaker_listener"],
    "pettingzoo": CASES["pettingzoo_custom"],
    "gymnasium": CASES["gymnasium_custom"],
}


@pytest.mark.parametrize("case", list(TRAIN))
def test_qmix_trains_and_evaluates(case: str, tmp_path) -> None:
    cfg = run_config(tmp_path, *TRAIN[case], "mixer=qmix", "t_max=300", "num_envs=2", "learner.batch_size=4",
                     "buffer.capacity=32", "eval.episodes=2", "eval.num_envs=2", "eval.interval=100000",
                     "logger.interval=100", "checkpoint.interval=100000")
    final = experiment.run(cfg)
    assert math.isfinite(final["eval/return_mean"])
    last = read_metrics(tmp_path)[-1]
    assert last["env_steps"] >= 300 and last["grad_steps"] > 0


def test_state_none_makes_qmix_fail_at_start_up(tmp_path) -> None:
    env = make(["env=lbf", "env.state=none"], num_envs=1)
    assert env.spec.state_dim == 0 and env.reset().state.shape == (1, 0)
    env.close()
    with pytest.raises(ConfigError, match="mixer.name='qmix' mixes with the global state, but env.name='lbf' has none"):
        experiment.run(run_config(tmp_path, "env=lbf", "env.state=none", "mixer=qmix"))


def test_smac_missing_is_a_clear_config_error(tmp_path) -> None:
    # No skip: this machine has neither oxwhirl's smac.env nor StarCraft II.
    with pytest.raises(ConfigError, match="oxwhirl.*unrelated") as err:
        experiment.run(run_config(tmp_path, "env=smac"))
    assert "env.name='smac'" in str(err.value) and "do not pip install smac" in str(err.value)


@pytest.mark.parametrize("overrides, message", [
    (["env=lbf", "env.key=Foraging-99x9-v3"], "env.key='Foraging-99x9-v3' is not an lbforaging id"),
    (["env=rware", "env.key=rware-huge"], "env.key='rware-huge' is not an rware id"),
    (["env=mpe", "env.scenario=simple_nope"], "env.scenario='simple_nope' is not an mpe2 scenario; choose one of: .*simple_spread"),
    (["env=gymnasium"], "env.factory='' is invalid"),
    (["env=pettingzoo", "env.factory=no_such_module:make"], "env.factory='no_such_module:make' is invalid: cannot import"),
    (["env=pettingzoo", "env.factory=custom_envs"], "import path 'pkg.module:callable'"),
    (["env=pettingzoo", "env.factory=custom_envs:TinyParallel", "+env.kwargs.size=3"], "env.kwargs=.*is invalid"),
    (["env=lbf", "env.state=native"], "env.state='native' is invalid: env.name='lbf' has no global state"),
    (["env=lbf", "env.state=global"], "env.state='global' is invalid: choose one of auto, native, concat_obs, none"),
    (["env=mpe", "env.team_reward=max"], "env.team_reward='max' is invalid"),
    (["env=lbf", "env.num_workers=-1"], "env.num_workers=-1 is invalid"),
])
def test_bad_env_config_is_a_config_error(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make(overrides, num_envs=1)
