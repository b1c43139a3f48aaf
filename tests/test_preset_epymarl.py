"""`preset=epymarl`: EPyMARL's shipped QMIX/VDN/IQL settings (conf/preset/epymarl.yaml).

One test case per value, so that a wrong one names itself; and the exact set of keys in which
`mixer=qmix,vdn,none` differ under the preset: the mixer subtree, plus where EPyMARL's own
iql.yaml differs from its qmix.yaml and vdn.yaml.
"""

import pytest
from omegaconf import OmegaConf

from marl.config import compose, flatten, validate

ENVS = ("lbf", "mpe", "climbing")

# Every value of EPyMARL's QMIX (src/config/default.yaml, algs/qmix.yaml, envs/gymma.yaml,
# learners/q_learner.py, modules/agents/rnn_agent.py) as this project's dotted key.
COMMON = {
    "agent.name": "mlp",                      # use_rnn: False
    "agent.hidden_dim": 64,
    "agent.n_layers": 2,                      # fc1 -> Linear -> fc2
    "agent.obs_agent_id": True,
    "agent.obs_last_action": False,
    "learner.optimizer": "adam",
    "learner.lr": 0.0005,
    "learner.optim_eps": 1e-8,                # torch's Adam default
    "learner.standardise_rewards": True,
    "learner.reward_stats_include_padding": True,  # q_learner.py updates with the whole trimmed batch
    "learner.gamma": 0.99,
    "learner.grad_clip": 10.0,
    "learner.double_q": True,
    "learner.td_lambda": 0.0,
    "learner.batch_size": 32,
    "learner.updates_per_episode": 1.0,
    "learner.target_update_interval": 200,
    "learner.target_update_unit": "grad_steps",  # q_learner.py counts training steps
    "learner.target_tau": 1.0,                # hard
    "epsilon.start": 1.0,
    "epsilon.finish": 0.05,
    "epsilon.anneal": 50000,
    "epsilon.unit": "env_steps",
    "buffer.capacity": 5000,
    "eval.interval": 50000,
    "eval.unit": "env_steps",
    "eval.episodes": 100,
    "eval.num_envs": 10,
    "logger.interval": 10000,
    "t_max": 2050000,
    "t_max_unit": "env_steps",
    "num_envs": 1,
    "mixer.name": "qmix",
    "mixer.embed_dim": 32,                    # mixing_embed_dim
    "mixer.hypernet_layers": 2,
    "mixer.hypernet_embed": 64,
}
PER_ENV = {
    "lbf": {"env.time_limit": 50, "env.normalize_obs": False, "env.team_reward": "sum",
            "env.state": "concat_obs", "env.action_masks": False},   # gymma.py: every action available
    "mpe": {"env.time_limit": 25, "env.team_reward": "sum", "env.state": "concat_obs"},
    "climbing": {"env.episode_limit": 25},
}
# Where EPyMARL's iql.yaml differs from its qmix.yaml/vdn.yaml (besides the mixer).
IQL = {"agent.name": "rnn", "agent.hidden_dim": 128, "learner.lr": 0.0003, "epsilon.anneal": 200000}


def flat(*overrides):
    cfg = compose(["run_dir=/tmp/x", "logger.wandb.mode=disabled", *overrides])
    validate(cfg)
    return flatten(OmegaConf.to_container(cfg, resolve=True))


_CACHE: dict = {}


def composed(env, mixer):
    if (env, mixer) not in _CACHE:
        _CACHE[env, mixer] = flat("preset=epymarl", f"env={env}", f"mixer={mixer}")
    return _CACHE[env, mixer]


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("key", list(COMMON))
def test_qmix_value(env, key):
    assert composed(env, "qmix")[key] == COMMON[key]


@pytest.mark.parametrize("env, key", [(e, k) for e in ENVS for k in PER_ENV[e]])
def test_env_value(env, key):
    assert composed(env, "qmix")[key] == PER_ENV[env][key]


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("key", list(IQL))
def test_iql_value(env, key):
    assert composed(env, "none")[key] == IQL[key]


def differing(a, b):
    return {k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>")}


@pytest.mark.parametrize("env", ENVS)
def test_mixers_differ_only_where_epymarl_configs_differ(env):
    qmix, vdn, iql = (composed(env, m) for m in ("qmix", "vdn", "none"))
    outside = lambda keys: {k for k in keys if not k.startswith("mixer.")}  # noqa: E731
    assert outside(differing(qmix, vdn)) == set()
    # IQL: its own lr, epsilon anneal, and a GRU agent of 128 units (the MLP's n_layers goes away).
    assert outside(differing(qmix, iql)) == {"agent.name", "agent.hidden_dim", "agent.n_layers",
                                             "learner.lr", "epsilon.anneal"}
    assert outside(differing(vdn, iql)) == outside(differing(qmix, iql))
    assert {qmix["mixer.name"], vdn["mixer.name"], iql["mixer.name"]} == {"qmix", "vdn", "none"}


@pytest.mark.parametrize("env", ENVS)
def test_iql_keeps_the_rest_of_epymarls_settings(env):
    iql = composed(env, "none")
    for key, value in {**COMMON, **PER_ENV[env]}.items():
        if key not in IQL and key != "agent.n_layers" and not key.startswith("mixer."):
            assert iql[key] == value, key


@pytest.mark.parametrize("preset", ["epymarl", "default"])
@pytest.mark.parametrize("env", ["lbf", "mpe", "climbing", "two_step"])
def test_composes_for_every_env(preset, env):
    cfg = flat(f"preset={preset}", f"env={env}")
    assert cfg["env.name"] == env
    if preset == "default":  # preset_env/ only has files for epymarl: the defaults are untouched
        assert cfg["learner.standardise_rewards"] is False and cfg["agent.name"] == "rnn"
        if env == "lbf":
            assert cfg["env.normalize_obs"] is True


# EPyMARL's runner bootstraps a time-limit end only where the env reports `episode_limit` (SMAC);
# its gym wrapper (gymma.py) never does. marl's own default bootstraps everywhere.
GYM_TASKS = ("lbf", "mpe", "rware", "climbing", "penalty", "vmas", "smax", "pettingzoo", "gymnasium")


@pytest.mark.parametrize("env, expected", [*((e, "terminal") for e in GYM_TASKS), ("smac", "bootstrap")])
def test_time_limit_end_is_epymarls_per_env(env, expected):
    cfg = compose(["run_dir=/tmp/x", "preset=epymarl", f"env={env}"])
    assert OmegaConf.select(cfg, "learner.time_limit_end").value == expected
    default = compose(["run_dir=/tmp/x", f"env={env}"])
    assert OmegaConf.select(default, "learner.time_limit_end").value == "bootstrap"


def test_agent_on_the_command_line_wins_over_the_preset():
    assert flat("preset=epymarl", "mixer=qmix", "agent=rnn")["agent.name"] == "rnn"
    assert flat("preset=epymarl", "mixer=none", "agent=mlp")["agent.name"] == "mlp"
