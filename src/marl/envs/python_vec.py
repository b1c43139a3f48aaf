"""A :class:`~marl.envs.base.VecEnv` over B independent single-env Python adapters.

:class:`PythonVecEnv` holds B adapters (:mod:`marl.envs.python_adapter`, the contract an env
author implements) and presents them to the runner as one batch. It owns the batch buffers and
the env spec; the envs step in this process or in worker processes (:mod:`marl.envs.python_workers`),
which write their rows of the buffers in place. :func:`build` is the tail of every Python env's
registered factory.

* every env gets its own seed from :func:`~marl.envs.base.derive_seeds` (stream "env copies");
* the spec's ``episode_limit`` is an upper bound on every episode (the envs truncate there), which
  the runner and the buffer rely on;
* ``env.state`` picks the state: the env's own (``native``), the concatenated observations
  (``concat_obs``), whichever exists (``auto``) or none (see :mod:`marl.envs.python_adapter`);
* ``state_dict()`` is ``{}``: Python envs cannot be snapshotted generically, so a resumed run
  starts fresh episodes (everything else resumes exactly).
"""

from __future__ import annotations

import atexit
import multiprocessing.util  # noqa: F401  (imported before our atexit hook, so ours runs first)
import weakref
from typing import Any, Callable, Sequence

import numpy as np
import torch

from marl.envs.base import EnvSpec, TimeStep, derive_seeds
from marl.envs.python_adapter import SingleEnv, check_common
from marl.envs.python_workers import EnvSlice, WorkerPool
from marl.errors import ConfigError

_LIVE: "weakref.WeakSet[PythonVecEnv]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Close forgotten envs before multiprocessing's own exit hook joins their workers."""
    for env in list(_LIVE):
        env.close()


class PythonVecEnv:
    """B single-env adapters as one :class:`~marl.envs.base.VecEnv` (see the module docstring).

    ``make_env`` must be picklable (a module-level function or a ``functools.partial`` of one)
    when ``num_workers > 0``. ``name`` is the env's config name, used in error messages.
    """

    def __init__(self, make_env: Callable[[], SingleEnv], num_envs: int, seeds: Sequence[int],
                 num_workers: int = 0, state: str = "auto", name: str = "env", device: Any = "cpu") -> None:
        if len(seeds) != num_envs:
            raise ValueError(f"need one seed per env: {len(seeds)} seeds for {num_envs} envs")
        self.num_envs, self.device = num_envs, torch.device(device)
        self._closed = False
        self._envs: EnvSlice | WorkerPool | None = None
        first = make_env()  # built here so that config errors surface in this process, at start-up
        info = first.info
        native = info.state_dim > 0
        if state == "native" and not native:
            first.close()
            raise ConfigError(f"env.state='native' is invalid: env.name={name!r} has no global state of its own; "
                              "choose auto, concat_obs or none")
        self._state_source = ("native" if native else "concat_obs") if state == "auto" else state
        n, B = info.n_agents, num_envs
        state_dim = {"native": info.state_dim, "concat_obs": n * info.obs_dim, "none": 0}[self._state_source]
        self.spec = EnvSpec(n_agents=n, obs_dim=info.obs_dim, state_dim=state_dim, n_actions=info.n_actions,
                            episode_limit=info.episode_limit, has_state=self._state_source == "native",
                            shared_reward=True, stats=tuple(info.stats))
        self._buf = {
            "obs": torch.zeros(B, n, info.obs_dim),
            "state": torch.zeros(B, info.state_dim if self._state_source == "native" else 0),
            "avail": torch.zeros(B, n, info.n_actions, dtype=torch.bool),
            "reward": torch.zeros(B),
            "terminated": torch.zeros(B, dtype=torch.bool),
            "truncated": torch.zeros(B, dtype=torch.bool),
        }
        workers = min(int(num_workers), B)
        if workers == 0:
            self._envs = EnvSlice(make_env, seeds, {k: v.numpy() for k, v in self._buf.items()}, 0, first=first)
        else:
            first.close()
            for v in self._buf.values():
                v.share_memory_()
            self._envs = WorkerPool(make_env, seeds, self._buf, workers)
        _LIVE.add(self)

    def _timestep(self, info: dict[str, torch.Tensor] | None = None) -> TimeStep:
        b = self._buf
        obs = b["obs"].clone()
        if self._state_source == "concat_obs":
            state = obs.reshape(self.num_envs, -1)
        else:
            state = b["state"].clone()
        ts = TimeStep(obs=obs, state=state, avail=b["avail"].clone(), reward=b["reward"].clone(),
                      terminated=b["terminated"].clone(), truncated=b["truncated"].clone(), info=info or {})
        if self.device.type != "cpu":
            ts = TimeStep(**{k: (v.to(self.device) if isinstance(v, torch.Tensor) else v)
                             for k, v in vars(ts).items() if k != "info"}, info=ts.info)
        return ts

    def reset(self, mask: torch.Tensor | None = None) -> TimeStep:
        rows = list(range(self.num_envs)) if mask is None else mask.cpu().nonzero().flatten().tolist()
        self._envs.reset(rows)
        return self._timestep()

    def step(self, actions: torch.Tensor) -> TimeStep:
        a = actions.detach().cpu().numpy().astype(np.int64, copy=False)
        stats = self._envs.step(a)
        return self._timestep({k: torch.from_numpy(v) for k, v in stats.items()})

    def state_dict(self) -> dict[str, Any]:
        """{}: Python envs cannot be snapshotted generically; a resumed run starts fresh episodes."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _LIVE.discard(self)
        if self._envs is not None:
            self._envs.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def build(cfg: Any, make_env: Callable[[], SingleEnv], num_envs: int, seed: int, device: Any = "cpu") -> PythonVecEnv:
    """The factory tail shared by the Python env adapters: seeds and workers from the env config."""
    check_common(cfg)
    seeds = derive_seeds(seed, num_envs, "env copies")
    return PythonVecEnv(make_env, num_envs, seeds, num_workers=int(cfg.num_workers), state=str(cfg.state),
                        name=str(cfg.name), device=device)
