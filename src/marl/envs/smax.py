"""SMAX (``jaxmarl==0.2.0``, CPU JAX) behind the batched protocol: B battles as one jitted vmap.

Facts this adapter relies on (read in the jaxmarl 0.2.0 source):

* The task is ``HeuristicEnemySMAX``: the learners control the allies, jaxmarl's scripted
  heuristic controls the enemies (JaxMARL's own SMAX baselines use it with
  ``see_enemy_actions=True, walls_cause_death=True, attack_mode="closest"``, our defaults).
* ``MultiAgentEnv.step`` auto-resets inside the step. The adapter calls ``step_env`` instead,
  which never resets, so ``step`` returns the true final observation of a finished battle and
  the new battle starts only when the runner calls ``reset(mask)``.
* ``state`` is SMAX's ``world_state`` (every unit's health, position, cooldown, type, team),
  masks come from ``get_avail_actions`` (a dead ally can only take the no-op ``stop``, action 4).
* Every ally receives the same team reward (damage dealt as a fraction of the enemies' total
  health, plus ``won_battle_bonus`` on a win); the adapter takes their mean, which equals it.
  The scale is SMAX's: a won battle returns at most about 2, unlike SMAC's 20.
* SMAX's own ``done`` includes the time limit, checked before its step counter increments (so its
  battles would last ``max_steps + 1`` steps). The adapter splits the ending itself:
  ``terminated`` when one side is wiped out, ``truncated`` when ``max_steps`` steps have run, so
  episodes last at most ``max_steps`` = ``spec.episode_limit``. ``info["battle_won"]`` is true when
  every enemy is dead and an ally survives (SMAX scores a mutual wipe as a draw).

Performance: the step and the (masked) reset are each one ``jax.jit`` of a ``jax.vmap`` over the
B envs, cached per map and env parameters, so each map/batch size compiles once per process
(train and eval envs of different B compile once each). Results cross to torch through DLPack
without a copy; torch must treat them as read-only (JAX buffers are immutable).

PRNG: one JAX key per env copy, all derived from the ``seed`` given to the factory; a step splits
every row's key, a reset only the masked rows', so an env's battles do not depend on when the other
envs finished, the same seed repeats exactly and ``state_dict`` can continue bitwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from marl.config import ComponentConfig
from marl.envs.base import EnvSpec, TimeStep
from marl.errors import ConfigError
from marl.registry import ENVS

ATTACK_MODES = ("closest", "random")


@dataclass
class SmaxConfig(ComponentConfig):
    """``map``: a SMAX map (3m, 2s3z, 5m_vs_6m, 8m, 3s5z, 10m_vs_11m, smacv2_5_units, ...).

    ``max_steps``: the episode limit (truncation; SMAX's default 100). ``attack_mode``: how the
    heuristic enemies pick targets (closest | random). ``enemy_shoots``: false gives harmless enemies
    (a debugging aid). ``see_enemy_actions``: whether observations include the enemies' last
    actions. ``walls_cause_death``: units touching the map edge die. ``won_battle_bonus``: reward
    added on a win. ``normalize_state``: scale the state's unit positions by the map size and unit
    type ids into [0, 1] (false: SMAX's raw ``world_state``, positions up to 32).
    """

    name: str = "smax"
    map: str = "3m"
    max_steps: int = 100
    attack_mode: str = "closest"
    enemy_shoots: bool = True
    see_enemy_actions: bool = True
    walls_cause_death: bool = True
    won_battle_bonus: float = 1.0
    normalize_state: bool = True


@dataclass
class _Compiled:
    """The jaxmarl env and its jitted batched functions for one map and parameter set."""

    env: Any
    reset: Callable[..., Any]
    step: Callable[..., Any]


_CACHE: dict[tuple[Any, ...], _Compiled] = {}


def _import_jax() -> tuple[Any, Any]:
    try:
        import jax
        import jaxmarl  # noqa: F401  (prints two lines about optional submodules; harmless)
    except ImportError as e:
        raise ConfigError(f"env.name='smax' needs jax and jaxmarl ({e}): pip install -e .[smax]") from e
    return jax, jax.numpy


def _compile(cfg: Any) -> _Compiled:
    """Build (or fetch from the cache) the env and its jitted vmapped reset and step."""
    jax, jnp = _import_jax()
    from jaxmarl.environments.smax import HeuristicEnemySMAX
    from jaxmarl.environments.smax.smax_env import MAP_NAME_TO_SCENARIO, map_name_to_scenario

    key = (str(cfg.map), str(cfg.attack_mode), bool(cfg.enemy_shoots),
           bool(cfg.see_enemy_actions), bool(cfg.walls_cause_death), float(cfg.won_battle_bonus),
           bool(cfg.normalize_state))
    if key in _CACHE:
        return _CACHE[key]
    if cfg.map not in MAP_NAME_TO_SCENARIO:
        raise ConfigError(f"env.map={cfg.map!r} is not a SMAX map; choose one of: "
                          f"{', '.join(sorted(MAP_NAME_TO_SCENARIO))}")
    if cfg.attack_mode not in ATTACK_MODES:
        raise ConfigError(f"env.attack_mode={cfg.attack_mode!r} is invalid: choose one of {', '.join(ATTACK_MODES)}")
    # SMAX's own max_steps only feeds its `done` flag, which the adapter does not use: the limit is
    # an argument of the jitted step instead, so every max_steps shares one compilation.
    env = HeuristicEnemySMAX(
        scenario=map_name_to_scenario(cfg.map), attack_mode=str(cfg.attack_mode),
        enemy_shoots=bool(cfg.enemy_shoots), see_enemy_actions=bool(cfg.see_enemy_actions),
        walls_cause_death=bool(cfg.walls_cause_death), won_battle_bonus=float(cfg.won_battle_bonus),
    )
    agents, n_allies = env.agents, env.num_allies

    # world_state = per unit [health fraction, x, y, weapon cooldown (s), type one-hot], then every
    # unit's team and type id. Positions (0..32) and type ids (0..5) are the only features far
    # outside [0, 1]; normalize_state scales them by the map size and the largest type id.
    n_units, n_feat = env.num_allies + env.num_enemies, len(env.own_features)
    unit_scale = [1.0, 1.0 / env.map_width, 1.0 / env.map_height] + [1.0] * (n_feat - 3)
    state_scale = jnp.asarray(unit_scale * n_units + [1.0] * n_units + [1.0 / (env.unit_type_bits - 1)] * n_units,
                              dtype=jnp.float32)
    normalize = bool(cfg.normalize_state)

    def observe(state: Any) -> tuple[Any, Any, Any]:
        obs = env.get_obs(state)
        avail = env.get_avail_actions(state)
        world = env.get_world_state(state)
        return (jnp.stack([obs[a] for a in agents]), world * state_scale if normalize else world,
                jnp.stack([avail[a] for a in agents]).astype(jnp.bool_))

    def reset_one(key: Any, mask: Any, state: Any) -> tuple[Any, Any]:
        nxt, sub = jax.random.split(key)
        _, fresh = env.reset(sub)
        keep = lambda new, old: jnp.where(mask, new, old)  # noqa: E731
        return keep(nxt, key), jax.tree.map(keep, fresh, state)

    def step_one(key: Any, state: Any, actions: Any, max_steps: Any) -> tuple[Any, ...]:
        key, sub = jax.random.split(key)
        _, state, rewards, _, _ = env.step_env(sub, state, {a: actions[i] for i, a in enumerate(agents)})
        alive = state.state.unit_alive
        allies_dead, enemies_dead = ~alive[:n_allies].any(), ~alive[n_allies:].any()
        terminated = allies_dead | enemies_dead
        truncated = (state.state.step >= max_steps) & ~terminated
        reward = jnp.stack([rewards[a] for a in agents]).mean()
        return key, state, reward.astype(jnp.float32), terminated, truncated, enemies_dead & ~allies_dead

    @jax.jit
    def reset(keys: Any, mask: Any, state: Any) -> tuple[Any, ...]:
        keys, state = jax.vmap(reset_one)(keys, mask, state)
        return (keys, state) + jax.vmap(observe)(state)

    @jax.jit
    def step(keys: Any, state: Any, actions: Any, max_steps: Any) -> tuple[Any, ...]:
        keys, state, *outs = jax.vmap(step_one, in_axes=(0, 0, 0, None))(keys, state, actions, max_steps)
        return (keys, state) + jax.vmap(observe)(state) + tuple(outs)

    _CACHE[key] = _Compiled(env=env, reset=reset, step=step)
    return _CACHE[key]


def _torch(x: Any) -> torch.Tensor:
    """A JAX array as a torch tensor sharing its memory (DLPack), a copy only if DLPack refuses."""
    try:
        return torch.from_dlpack(x)
    except (RuntimeError, TypeError, BufferError):
        return torch.from_numpy(np.asarray(x).copy())


class SmaxEnv:
    """``num_envs`` SMAX battles stepped as one jitted call (see the module docstring)."""

    def __init__(self, cfg: Any, num_envs: int, seed: int) -> None:
        if int(cfg.max_steps) <= 0:
            raise ConfigError(f"env.max_steps={cfg.max_steps!r} is invalid: must be > 0")
        self.jax, self.jnp = _import_jax()
        self.fns = _compile(cfg)
        env = self.fns.env
        self.num_envs = num_envs
        self.n_agents = env.num_allies
        self.spec = EnvSpec(
            n_agents=env.num_allies, obs_dim=int(env.obs_size), state_dim=int(env.state_size),
            n_actions=int(env.num_ally_actions), episode_limit=int(cfg.max_steps), has_state=True,
            shared_reward=True, stats=("battle_won",),
        )
        self._max_steps = self.jnp.asarray(int(cfg.max_steps), dtype=self.jnp.int32)
        # One key per env, so that resetting some envs never shifts the others' random streams.
        self._key = self.jax.random.split(self.jax.random.PRNGKey(seed % 2**32), num_envs)
        # A zero template batch of states, shaped by tracing (no compile); the first reset fills it.
        _, one = self.jax.eval_shape(env.reset, self.jax.random.PRNGKey(0))
        self._state = self.jax.tree.map(lambda x: self.jnp.zeros((num_envs, *x.shape), x.dtype), one)
        self._all = self.jnp.ones(num_envs, dtype=self.jnp.bool_)
        self._no = torch.zeros(num_envs, dtype=torch.bool)

    def reset(self, mask: torch.Tensor | None = None) -> TimeStep:
        m = self._all if mask is None else self.jnp.asarray(mask.cpu().numpy())
        self._key, self._state, obs, state, avail = self.fns.reset(self._key, m, self._state)
        return TimeStep(obs=_torch(obs), state=_torch(state), avail=_torch(avail),
                        reward=torch.zeros(self.num_envs), terminated=self._no, truncated=self._no,
                        info={"battle_won": self._no})

    def step(self, actions: torch.Tensor) -> TimeStep:
        a = self.jnp.asarray(actions.to(torch.int32).cpu().numpy())
        self._key, self._state, obs, state, avail, reward, terminated, truncated, won = self.fns.step(
            self._key, self._state, a, self._max_steps)
        return TimeStep(obs=_torch(obs), state=_torch(state), avail=_torch(avail), reward=_torch(reward),
                        terminated=_torch(terminated), truncated=_torch(truncated),
                        info={"battle_won": _torch(won)})

    def state_dict(self) -> dict[str, Any]:
        """The PRNG key and every env's battle state as numpy arrays: enough to continue bitwise."""
        leaves = self.jax.tree.leaves(self._state)
        return {"key": np.asarray(self._key).copy(), "leaves": [np.asarray(x).copy() for x in leaves]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        treedef = self.jax.tree.structure(self._state)
        self._key = self.jnp.asarray(state["key"])
        self._state = self.jax.tree.unflatten(treedef, [self.jnp.asarray(x) for x in state["leaves"]])

    def close(self) -> None:
        pass


@ENVS.register("smax", config=SmaxConfig)
def make_smax(cfg: Any, num_envs: int, seed: int, device: Any = "cpu") -> SmaxEnv:
    """``device`` is accepted for the common factory signature; SMAX runs on JAX's CPU backend."""
    return SmaxEnv(cfg, num_envs=num_envs, seed=seed)
