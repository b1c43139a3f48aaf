"""A task's random-policy return: the lower reference of the report's per-task normalisation.

Measured, not looked up: the env is built from the run's own ``env`` config with the project's
env builder (``ENVS.build``) and played by the evaluation loop itself (:func:`marl.runner.evaluate`)
with ε = 1, i.e. a uniform draw among each agent's available actions at every step, so the
reference sees exactly the episode ends, time limits, action masks and reward aggregation that the
runs' greedy evaluations saw. It is seeded (the env seeds are derived from ``seed`` on their own
stream, the action draws from ``seed``), so it is the same number on every call.

Measured values are cached in a JSON file (by default ``<report folder>/random_returns.json``),
keyed by :func:`cache_key`: a hash of the env config (keys sorted), the number of episodes and the
seed. A changed env setting, episode count or seed is a new key and is measured again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

RANDOM_EPISODES = 200  # enough for a standard error of a few percent of the spread of returns
RANDOM_SEED = 0
RANDOM_NUM_ENVS = 10
CACHE_NAME = "random_returns.json"


class UniformPolicy:
    """Stands in for :class:`marl.policy.Policy` in a :class:`marl.runner.Runner` acting with ε = 1:
    no network, zero Q-values (never used: every action is an exploratory draw) and no hidden state."""

    def __init__(self, n_agents: int, n_actions: int) -> None:
        self.n_agents, self.n_actions = n_agents, n_actions

    def initial_hidden(self, batch: int, device: torch.device) -> torch.Tensor:
        return torch.zeros(batch * self.n_agents, 0, device=device)

    def __call__(self, obs: torch.Tensor, last_actions: torch.Tensor,
                 hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(*obs.shape[:3], self.n_actions, device=obs.device), hidden


def cache_key(env: dict[str, Any], episodes: int, seed: int) -> str:
    """What a cached value is keyed by: the env config (sorted JSON), the episodes and the seed."""
    text = json.dumps({"env": env, "episodes": episodes, "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _env_config(env: dict[str, Any]) -> Any:
    """The run's env config on top of its registered schema, so that keys added since the run was
    saved take their defaults (as a resumed run does) and the factory gets typed values."""
    from omegaconf import OmegaConf

    from marl.registry import ENVS

    schema = ENVS.get(str(env.get("name"))).config
    return OmegaConf.merge(OmegaConf.structured(schema), env)


def measure(env: dict[str, Any], episodes: int = RANDOM_EPISODES, seed: int = RANDOM_SEED) -> dict[str, float]:
    """Mean and standard deviation of the return of a uniform-random policy over ``episodes`` episodes."""
    from marl.envs.base import derive_seeds
    from marl.runner import Runner, evaluate

    from marl.registry import ENVS

    cfg = _env_config(env)
    vec = ENVS.build(cfg, num_envs=min(RANDOM_NUM_ENVS, episodes), seed=derive_seeds(seed, 1, "random_policy")[0])
    try:
        policy = UniformPolicy(vec.spec.n_agents, vec.spec.n_actions)
        generator = torch.Generator().manual_seed(seed)
        runner = Runner(vec, policy, torch.device("cpu"), generator,  # type: ignore[arg-type]
                        record=False, check_finite=False)
        out = evaluate(runner, episodes, epsilon=1.0)
    finally:
        vec.close()
    return {"return_mean": out["eval/return_mean"], "return_std": out["eval/return_std"]}


def random_return(env: dict[str, Any], cache: Path | None, episodes: int = RANDOM_EPISODES,
                  seed: int = RANDOM_SEED, label: str = "") -> float:
    """The task's random-policy mean return, from ``cache`` when it holds this key, else measured and
    added to it. An unreadable cache file is an error naming it (delete it to measure again)."""
    key = cache_key(env, episodes, seed)
    entries: dict[str, Any] = {}
    if cache is not None and cache.is_file():
        try:
            entries = json.loads(cache.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{cache}: unreadable random-return cache ({exc}); delete it to measure again") from exc
    if key not in entries:
        try:
            measured = measure(env, episodes, seed)
        except Exception as exc:  # a missing env package, a config the current schema no longer takes
            raise ValueError(f"task {label or env.get('name')}: the random policy could not be run "
                             f"({type(exc).__name__}: {exc}); give its lower bound with --bounds "
                             f"{label or env.get('name')}=LOW:") from exc
        entries[key] = {"task": label, "episodes": episodes, "seed": seed, **measured, "env": env}
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(entries, indent=1, sort_keys=True, default=str) + "\n")
    return float(entries[key]["return_mean"])
