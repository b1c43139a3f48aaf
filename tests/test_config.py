"""Composition, ablation hygiene and start-up errors."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from marl.config import CONF_DIR, KEY_ROLES, NOT_EXPERIMENT, RESUME_MAY_CHANGE, Config, KeyRole, compose, flatten
from marl.registry import ALL, import_all_components

from launch import expand_int_ranges

ROOT = Path(__file__).resolve().parents[1]


def resolved(*overrides):
    return OmegaConf.to_container(compose(["run_dir=/tmp/x", *overrides]), resolve=True)


@pytest.mark.parametrize("preset", ["default", "two_step_paper", "pymarl2"])
def test_mixer_choice_changes_only_the_mixer_subtree(preset):
    configs = {m: resolved(f"mixer={m}", f"preset={preset}") for m in ("qmix", "vdn", "none")}
    mixers = {m: c.pop("mixer") for m, c in configs.items()}
    assert configs["qmix"] == configs["vdn"] == configs["none"]
    assert len({str(m) for m in mixers.values()}) == 3


def test_presets():
    paper = resolved("preset=two_step_paper", "mixer=qmix")
    assert paper["agent"]["name"] == "mlp" and paper["agent"]["hidden_dim"] == 64
    assert paper["mixer"]["embed_dim"] == 8
    assert paper["epsilon"]["start"] == paper["epsilon"]["finish"] == 1.0
    assert (paper["t_max"], paper["t_max_unit"]) == (5000, "episodes")
    assert paper["buffer"]["capacity"] == 500 and paper["learner"]["target_update_interval"] == 100
    p2 = resolved("preset=pymarl2")
    assert p2["learner"]["optimizer"] == "adam" and p2["learner"]["lr"] == 0.001
    assert p2["learner"]["td_lambda"] == 0.6 and p2["learner"]["batch_size"] == 128
    assert p2["num_envs"] == 8 and p2["epsilon"]["anneal"] == 100000
    assert resolved()["mixer"]["embed_dim"] == 32  # PyMARL's default outside the preset


@pytest.mark.parametrize("env, want", [
    (("env=lbf",), 8), (("env=mpe",), 8), (("env=rware",), 8), (("env=pettingzoo",), 8),
    (("env=gymnasium", "env.factory=pkg:make"), 8),
    (("env=smac",), 1), (("env=two_step",), 1), (("env=climbing",), 1), (("env=vmas",), 1), (("env=smax",), 1),
])
def test_envs_stepped_in_python_default_to_eight_per_run(env, want):
    assert resolved(*env)["num_envs"] == want
    assert resolved(*env, "num_envs=1")["num_envs"] == 1     # the command line wins
    assert resolved(*env, "preset=epymarl")["num_envs"] == 1  # a preset keeps its source's value
    assert resolved(*env, "preset=pymarl2")["num_envs"] == 8


def test_integer_ranges_become_hydra_ranges():
    args = ["seed=0-9", "mixer=qmix,vdn", "env.key=Foraging-8x8-2p-2f-coop-v3", "t_max=5", "+x.y=3-4", "a=5-2"]
    assert expand_int_ranges(args) == [
        "seed=range(0,10)", "mixer=qmix,vdn", "env.key=Foraging-8x8-2p-2f-coop-v3", "t_max=5",
        "+x.y=range(3,5)", "a=5-2"]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("mixer=foo", ["mixer", "foo", "qmix", "vdn", "none"]),
        ("mixer.name=foo", ["mixer.name", "foo", "qmix", "vdn", "none"]),
        ("learner.lr=-1", ["learner.lr", "-1", "> 0"]),
        ("seed=abc", ["seed", "abc", "int"]),
        ("t_max=0", ["t_max", "0", "> 0"]),
        ("t_max_unit=hours", ["t_max_unit", "hours", "env_steps"]),
        ("env=nope", ["env", "nope", "two_step"]),
        ("learner.gamma=2", ["learner.gamma", "2", "[0, 1]"]),
        ("learner.time_limit_end=truncate", ["learner.time_limit_end", "truncate", "bootstrap", "terminal"]),
    ],
)
def test_bad_config_fails_fast_naming_key_value_and_allowed(override, expected, tmp_path):
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "launch.py", override, f"hydra.run.dir={tmp_path}", "logger.wandb.mode=disabled"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    message = proc.stderr + proc.stdout
    for word in expected:
        assert word.lower() in message.lower(), f"{word!r} missing from:\n{message}"
    assert "Traceback" not in message
    assert time.time() - start < 60
    assert not (tmp_path / "metrics.jsonl").exists() or (tmp_path / "metrics.jsonl").stat().st_size == 0


def _leaves(node) -> dict:
    """Dotted keys to values, enums by value, with the defaults lists left out."""
    return {k: v for k, v in flatten(OmegaConf.to_container(node, resolve=False)).items()
            if k.split(".")[0] != "defaults"}


def _differences(yaml: dict, schema: dict) -> dict:
    """Keys whose YAML value differs from the schema default (bool and number kept apart: 1 is not True)."""
    return {k: (yaml.get(k, "<absent>"), schema.get(k, "<absent>")) for k in yaml.keys() | schema.keys()
            if yaml.get(k, "<absent>") != schema.get(k, "<absent>")
            or isinstance(yaml.get(k), bool) != isinstance(schema.get(k), bool)}


# Not a default but where a Hydra job writes: ${hydra:runtime.output_dir} (the schema's "." is
# what a config composed without Hydra's job machinery gets).
HYDRA_ONLY = {"run_dir"}
GROUPS = {registry.kind for registry in ALL}  # chosen in conf/config.yaml's defaults list


def test_the_run_defaults_in_config_yaml_are_the_dataclass_defaults():
    """conf/config.yaml (what users read and `--cfg job` prints) and marl.config.Config (what
    types the keys and what a config saved before a key existed resumes with) hold the same
    defaults, key by key, enums by value, nested groups included."""
    yaml = {k: v for k, v in _leaves(OmegaConf.load(CONF_DIR / "config.yaml")).items()
            if k.split(".")[0] != "hydra" and k not in HYDRA_ONLY}
    schema = {k: v for k, v in _leaves(OmegaConf.structured(Config)).items()
              if k.split(".")[0] not in GROUPS and k not in HYDRA_ONLY}
    assert "learner.optimizer" in schema and "logger.wandb.mode" in schema  # nested groups are compared
    assert _differences(yaml, schema) == {}


def test_component_yaml_values_are_their_schema_defaults():
    """Each component's YAML (conf/<kind>/<name>.yaml) sets only its schema's defaults (a name the
    schema leaves to the YAML, ``???``, excepted): the defaults live in the component's module."""
    import_all_components()
    for registry in ALL:
        for name in registry.names():
            yaml = _leaves(OmegaConf.load(CONF_DIR / registry.kind / f"{name}.yaml"))
            schema = _leaves(OmegaConf.structured(registry.get(name).config))
            schema = {k: v for k, v in schema.items() if k in yaml and v != "???"}
            yaml = {k: v for k, v in yaml.items() if k in schema}
            assert _differences(yaml, schema) == {}, f"conf/{registry.kind}/{name}.yaml"


def test_bookkeeping_keys_are_declared_once_and_are_run_keys():
    """RESUME_MAY_CHANGE (experiment.check_resumable) and NOT_EXPERIMENT (W&B and report grouping)
    both come from KEY_ROLES: the seed names no experiment but is fixed on resume; t_max and
    checkpoint may grow on resume but name the experiment; the rest is bookkeeping for both."""
    fields = set(Config.__dataclass_fields__)
    assert set(KEY_ROLES) <= fields, set(KEY_ROLES) - fields
    for key, role in KEY_ROLES.items():
        assert (key in RESUME_MAY_CHANGE) == (role is not KeyRole.replicate), key
        assert (key in NOT_EXPERIMENT) == (role is not KeyRole.extent), key
    assert set(RESUME_MAY_CHANGE) | set(NOT_EXPERIMENT) == set(KEY_ROLES)
    assert "seed" not in RESUME_MAY_CHANGE and {"t_max", "checkpoint"}.isdisjoint(NOT_EXPERIMENT)
