"""The natively batched adapters, VMAS and SMAX, against the real packages.

They need the extras (`pip install -e .[vmas,smax]`, part of `.[all]` in CI) and fail, not skip,
without them: the failure is a ConfigError that names the install command. SMAX compiles once
per map and batch size per process, so every SMAX test here uses B=8 on 3m
(the training runs too: num_envs=8, eval.num_envs=8) and the other maps one small batch each.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from helpers import read_metrics, run_config
from omegaconf import OmegaConf

from marl.envs.base import TimeStep
from marl.errors import ConfigError
from marl.experiment import run
from marl.policy import select_actions

B = 8


def random_actions(ts: TimeStep, gen: torch.Generator) -> torch.Tensor:
    q = torch.zeros(ts.avail.shape)
    return select_actions(q, ts.avail, 1.0, gen)


def check_timestep(ts: TimeStep, spec, n: int) -> None:
    """Shapes and dtypes of marl.envs.base."""
    assert ts.obs.shape == (n, spec.n_agents, spec.obs_dim) and ts.obs.dtype == torch.float32
    assert ts.state.shape == (n, spec.state_dim) and ts.state.dtype == torch.float32
    assert ts.avail.shape == (n, spec.n_agents, spec.n_actions) and ts.avail.dtype == torch.bool
    for x in (ts.reward,):
        assert x.shape == (n,) and x.dtype == torch.float32
    for x in (ts.terminated, ts.truncated):
        assert x.shape == (n,) and x.dtype == torch.bool
    assert torch.isfinite(ts.obs).all() and torch.isfinite(ts.state).all() and torch.isfinite(ts.reward).all()
    assert ts.avail.any(-1).all(), "every agent must have at least one available action"


# --- VMAS -----------------------------------------------------------------------------------


def vmas_env(scenario: str = "balance", n: int = B, seed: int = 0, **kw):
    from marl.envs.vmas import VmasConfig, make_vmas

    return make_vmas(OmegaConf.structured(VmasConfig(scenario=scenario, **kw)), num_envs=n, seed=seed)


@pytest.mark.parametrize("scenario, n_agents", [("balance", 4), ("navigation", 3), ("transport", 4)])
def test_vmas_shapes_dtypes_and_no_masks(scenario, n_agents):
    env = vmas_env(scenario)
    spec = env.spec
    assert spec.n_agents == n_agents and spec.n_actions == 9  # 3x3 discrete holonomic moves
    assert not spec.has_state and spec.state_dim == spec.n_agents * spec.obs_dim
    ts = env.reset()
    check_timestep(ts, spec, B)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        ts = env.step(random_actions(ts, gen))
        check_timestep(ts, spec, B)
        assert ts.avail.all()
        torch.testing.assert_close(ts.state, ts.obs.reshape(B, -1))


def test_vmas_reset_mask_touches_only_masked_rows():
    env, ref = vmas_env(seed=3), vmas_env(seed=3)
    gen = torch.Generator().manual_seed(0)
    ts = env.reset()
    ref.reset()
    for _ in range(5):
        a = random_actions(ts, gen)
        ts, ts_ref = env.step(a), ref.step(a)
    before = ts.obs.clone()
    mask = torch.zeros(B, dtype=torch.bool)
    mask[[1, 4]] = True
    after = env.reset(mask)
    assert torch.equal(after.obs[~mask], before[~mask])
    assert not torch.allclose(after.obs[mask], before[mask])
    assert (env.env.steps[mask] == 0).all() and (env.env.steps[~mask] == 5).all()
    # The untouched worlds keep evolving exactly as in an env that was never reset.
    for _ in range(3):
        a = random_actions(after, gen)
        after, ts_ref = env.step(a), ref.step(a)
        assert torch.equal(after.obs[~mask], ts_ref.obs[~mask])


def rollout(env, steps: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ts = env.reset()
    out = [ts.obs]
    for _ in range(steps):
        ts = env.step(random_actions(ts, gen))
        out.append(ts.obs)
        if ts.done.any():
            ts = env.reset(ts.done)
            out.append(ts.obs)
    return torch.stack(out)


def test_vmas_same_seed_repeats_and_seeds_differ():
    a, b, c = vmas_env(seed=7), vmas_env(seed=7), vmas_env(seed=8)
    # Interleave another VMAS env between a and b: VMAS's RNG slot is shared by all its envs,
    # the adapter must keep each env's stream its own.
    ra = rollout(a, 10)
    c.reset()
    rb = rollout(b, 10)
    assert torch.equal(ra, rb)
    assert not torch.allclose(rollout(vmas_env(seed=8), 10)[0], ra[0])
    first = a.reset().obs
    assert not torch.allclose(first[0], first[1]), "env copies in one batch must differ"


def test_vmas_terminated_truncated_split():
    max_steps = 40
    env = vmas_env("balance", n=16, seed=0, max_steps=max_steps)
    gen = torch.Generator().manual_seed(0)
    ts, t = env.reset(), torch.zeros(16, dtype=torch.long)
    seen_term = seen_trunc = 0
    for _ in range(2 * max_steps):
        ts = env.step(random_actions(ts, gen))
        t += 1
        assert not (ts.terminated & ts.truncated).any()
        assert (t[ts.truncated] == max_steps).all(), "truncation only at the time limit"
        assert ts.done[t == max_steps].all(), "the time limit always ends the episode"
        assert (t[ts.terminated] <= max_steps).all()
        seen_term += int(ts.terminated.sum())
        seen_trunc += int(ts.truncated.sum())
        if ts.done.any():
            done = ts.done
            ts = env.reset(done)
            t[done] = 0
    assert seen_term > 0 and seen_trunc > 0, (seen_term, seen_trunc)


def test_vmas_team_reward_mean_or_sum():
    mean_env, sum_env = vmas_env("navigation", seed=1), vmas_env("navigation", seed=1, team_reward="sum")
    gen = torch.Generator().manual_seed(0)
    ts = mean_env.reset()
    sum_env.reset()
    for _ in range(5):
        a = random_actions(ts, gen)
        ts, ts_sum = mean_env.step(a), sum_env.step(a)
        torch.testing.assert_close(ts_sum.reward, ts.reward * mean_env.spec.n_agents)
    assert ts.reward.abs().sum() > 0


def test_vmas_bad_config_names_the_key():
    with pytest.raises(ConfigError, match="env.scenario='nope'"):
        vmas_env("nope")
    with pytest.raises(ConfigError, match="env.team_reward"):
        vmas_env(team_reward="max")


# --- SMAX -----------------------------------------------------------------------------------

def smax_env(map_name: str = "3m", n: int = B, seed: int = 0, **kw):
    from marl.envs.smax import SmaxConfig, make_smax

    return make_smax(OmegaConf.structured(SmaxConfig(map=map_name, **kw)), num_envs=n, seed=seed)


def focus_fire(avail: torch.Tensor) -> torch.Tensor:
    """A scripted ally policy that wins some 3m battles: shoot the first enemy in range, else
    advance (move action 1); dead allies stop (action 4)."""
    attack = avail[..., 5:]
    a = torch.where(attack.any(-1), attack.float().argmax(-1) + 5, torch.ones_like(attack[..., 0], dtype=torch.long))
    return torch.where(avail.gather(-1, a.unsqueeze(-1)).squeeze(-1), a, torch.full_like(a, 4))


def test_smax_shapes_dtypes_and_masks_respected():
    env = smax_env()
    spec = env.spec
    assert (spec.n_agents, spec.n_actions, spec.obs_dim, spec.state_dim) == (3, 8, 75, 72)
    assert spec.has_state and spec.shared_reward and spec.episode_limit == 100
    ts = env.reset()
    check_timestep(ts, spec, B)
    # Armies start 16 apart, outside the marines' range of 5: no attack is available yet.
    assert not ts.avail[..., 5:].any() and ts.avail[..., :5].all()
    gen = torch.Generator().manual_seed(0)
    chosen_attack = 0
    for _ in range(60):
        a = random_actions(ts, gen)
        assert ts.avail.gather(-1, a.unsqueeze(-1)).all(), "epsilon=1 picked an unavailable action"
        chosen_attack += int((a >= 5).sum())
        ts = env.step(a)
        check_timestep(ts, spec, B)
        assert ts.info["battle_won"].shape == (B,) and ts.info["battle_won"].dtype == torch.bool
        # Dead allies (all-zero own features) can only stop.
        dead = ts.obs[..., -10:].abs().sum(-1) == 0
        assert (ts.avail[dead].sum(-1) == 1).all() and ts.avail[dead][:, 4].all()
        if ts.done.any():
            ts = env.reset(ts.done)
    assert chosen_attack > 0, "attacks became available during battles and were sampled"


def test_smax_reset_mask_touches_only_masked_rows():
    env, ref = smax_env(seed=5), smax_env(seed=5)
    ts = env.reset()
    ref.reset()
    for _ in range(4):
        a = focus_fire(ts.avail)
        ts, ts_ref = env.step(a), ref.step(a)
    mask = torch.zeros(B, dtype=torch.bool)
    mask[[0, 5]] = True
    after = env.reset(mask)
    assert torch.equal(after.obs[~mask], ts.obs[~mask]) and torch.equal(after.state[~mask], ts.state[~mask])
    assert not torch.allclose(after.state[mask], ts.state[mask])
    steps = torch.tensor(np.asarray(env._state.state.step))
    assert (steps[mask] == 0).all() and (steps[~mask] == 4).all()
    # Per-env PRNG keys: the other battles go on exactly as in an env that was never reset.
    for _ in range(3):
        a = focus_fire(after.avail)
        after, ts_ref = env.step(a), ref.step(a)
        assert torch.equal(after.state[~mask], ts_ref.state[~mask])


def test_smax_same_seed_repeats_and_seeds_differ():
    ra, rb = rollout(smax_env(seed=11), 25), rollout(smax_env(seed=11), 25)
    assert torch.equal(ra, rb)
    rc = rollout(smax_env(seed=12), 25)
    assert not torch.allclose(rc[0], ra[0])
    assert not torch.allclose(ra[0, 0], ra[0, 1]), "env copies in one batch must differ"


def test_smax_episode_ends_terminated_truncated_and_battle_won():
    # The time limit: max_steps=3 shares the compiled step (the limit is a traced argument).
    env = smax_env(max_steps=3)
    ts = env.reset()
    for t in range(1, 4):
        ts = env.step(torch.full((B, 3), 4))  # everyone stops: nobody can die
        assert not ts.terminated.any()
        assert ts.truncated.all() == (t == 3) and ts.truncated.any() == (t == 3)
    # Battles that end: a win (all enemies dead, reward includes the bonus) or a loss, terminated.
    env = smax_env(seed=3)
    ts = env.reset()
    wins = losses = 0
    for _ in range(60):
        ts = env.step(focus_fire(ts.avail))
        won = ts.info["battle_won"]
        assert not ts.truncated.any() and not (won & ~ts.terminated).any()
        assert (ts.reward[won] >= 1.0).all() and (ts.reward[ts.terminated & ~won] < 1.0).all()
        wins, losses = wins + int(won.sum()), losses + int((ts.terminated & ~won).sum())
        if ts.done.any():
            ts = env.reset(ts.done)
    assert wins > 0 and losses > 0, (wins, losses)


def test_smax_state_dict_continues_bitwise_and_dlpack_shares_memory():
    from marl.envs.smax import _torch

    env = smax_env(seed=2)
    ts = env.reset()
    for _ in range(3):
        ts = env.step(focus_fire(ts.avail))
    saved, avail = env.state_dict(), ts.avail

    def go(ts_avail):
        out = []
        for _ in range(5):
            ts = env.step(focus_fire(ts_avail))
            ts_avail = ts.avail
            out.append(ts.state)
        return torch.stack(out)

    first = go(avail)
    env.load_state_dict(saved)
    assert torch.equal(go(avail), first)
    import jax.numpy as jnp

    x = jnp.arange(12.0).reshape(3, 4)
    assert _torch(x).data_ptr() == x.unsafe_buffer_pointer()


@pytest.mark.parametrize("map_name, n_agents, n_actions", [("2s3z", 5, 10), ("5m_vs_6m", 5, 11)])
def test_smax_other_maps(map_name, n_agents, n_actions):
    env = smax_env(map_name, n=4)
    assert (env.spec.n_agents, env.spec.n_actions) == (n_agents, n_actions)
    ts = env.reset()
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        a = random_actions(ts, gen)
        assert ts.avail.gather(-1, a.unsqueeze(-1)).all()
        ts = env.step(a)
        check_timestep(ts, env.spec, 4)


def test_smax_bad_map_is_a_config_error():
    with pytest.raises(ConfigError, match="env.map='4m'"):
        smax_env("4m")


def test_smax_missing_package_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "jaxmarl", None)
    with pytest.raises(ConfigError, match=r"pip install -e \.\[smax\]"):
        smax_env()


# --- QMIX through the training loop ---------------------------------------------------------

SHORT = ("mixer=qmix", "t_max=400", f"num_envs={B}", f"eval.num_envs={B}", f"eval.episodes={B}",
         "eval.interval=200", "logger.interval=100", "learner.batch_size=4", "buffer.capacity=64")


@pytest.mark.parametrize("env_args", [("env=vmas", "env.max_steps=25"), ("env=smax",)])
def test_qmix_trains_and_evaluates(tmp_path, env_args):
    final = run(run_config(tmp_path, *env_args, *SHORT))
    rows = read_metrics(tmp_path)
    assert max(r["env_steps"] for r in rows) >= 400
    assert any(r.get("grad_steps", 0) > 0 and "loss" in r for r in rows), "no gradient step was logged"
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows if "loss" in r)
    evals = [r for r in rows if "eval/return_mean" in r]
    assert len(evals) >= 2 and "eval/return_mean" in final
    if env_args[0] == "env=smax":
        assert 0.0 <= final["eval/battle_won_mean"] <= 1.0
