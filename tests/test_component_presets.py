"""Every registered component composes under every preset (conf/preset/*.yaml).

A new mixer is one module and one YAML: under a preset that picks a config per mixer
(preset=epymarl's ``agent: epymarl/${mixer}``) a mixer without a file of its own there gets the
folder's ``default.yaml`` (``marl.registry.store_preset_defaults``), not Hydra's
MissingConfigException. Shown with every registered mixer and agent, and with a mixer registered
only here, whose YAML is a ConfigStore node standing in for its ``conf/mixer/<name>.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf
from torch import nn

from marl.config import CONF_DIR, ComponentConfig, compose, flatten, validate
from marl.registry import AGENTS, MIXERS, import_all_components

PRESETS = sorted(p.stem for p in (CONF_DIR / "preset").glob("*.yaml"))
NEW = "test_sum"  # registered by the fixture below only


@dataclass
class SumConfig(ComponentConfig):
    name: str = NEW


class SumMixer(nn.Module):
    """VDN's sum, as a stranger's new mixer: no state, one joint value."""

    needs_state = False
    out_dim = 1

    def forward(self, agent_qs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return agent_qs.sum(-1, keepdim=True)


@pytest.fixture
def new_mixer():
    """``test_sum`` registered as a mixer (its module) with its YAML (a ConfigStore node), then removed."""
    MIXERS.register(NEW, config=SumConfig)(lambda cfg, n_agents, state_dim: SumMixer())
    store = ConfigStore.instance()
    store.store(group="mixer", name=NEW, node={"defaults": [f"{NEW}_schema", "_self_"], "name": NEW})
    try:
        yield NEW
    finally:
        del MIXERS._entries[NEW]
        for group, names in (("mixer", (NEW, f"{NEW}_schema")), ("agent/epymarl", (NEW,))):
            node = store.repo
            for part in group.split("/"):
                node = node.get(part, {})
            for name in names:
                node.pop(f"{name}.yaml", None)


def settings(*overrides: str) -> dict:
    cfg = compose(["run_dir=/tmp/x", "logger.wandb.mode=disabled", *overrides])
    validate(cfg)
    return flatten(OmegaConf.to_container(cfg, resolve=True))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_mixer_and_agent_composes_under_every_preset(preset, new_mixer):
    import_all_components()
    mixers = MIXERS.names()
    assert new_mixer in mixers and {"qmix", "vdn", "none", "qplex"} <= set(mixers)
    for mixer in mixers:
        for agent in (None, *AGENTS.names()):  # the preset's own agent, then each one by name
            chosen = [f"agent={agent}"] if agent else []
            cfg = settings(f"preset={preset}", f"mixer={mixer}", *chosen)
            assert cfg["mixer.name"] == mixer, (preset, mixer, agent)
            if agent:
                assert cfg["agent.name"] == agent, (preset, mixer, agent)


def test_a_mixer_without_its_own_preset_file_gets_the_presets_default_agent(new_mixer):
    """Under preset=epymarl the new mixer, with no agent/epymarl/test_sum.yaml, gets EPyMARL's
    QMIX/VDN agent (agent/epymarl/default.yaml): it differs from mixer=qmix in the mixer subtree only."""
    assert not (CONF_DIR / "agent" / "epymarl" / f"{new_mixer}.yaml").exists()
    new, qmix = settings("preset=epymarl", f"mixer={new_mixer}"), settings("preset=epymarl", "mixer=qmix")
    assert {k for k in new.keys() | qmix.keys() if new.get(k) != qmix.get(k) and not k.startswith("mixer.")} == set()
    assert (new["agent.name"], new["agent.n_layers"]) == ("mlp", 2)
    assert settings("preset=epymarl", "mixer=none")["agent.name"] == "rnn"  # IQL keeps its own file
