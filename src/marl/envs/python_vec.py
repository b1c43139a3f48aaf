"""A :class:`~marl.envs.base.VecEnv` over B independent single-env Python adapters.

Python environments (LBF, RWARE, MPE, any PettingZoo or Gymnasium env, SMAC) step one episode at
a time. :class:`PythonVecEnv` holds B of them and presents them as one batch:

* in-process (``num_workers=0``), or in ``num_workers`` worker processes, each owning a contiguous
  slice of the envs. The batch buffers (obs, state, avail, reward, terminated, truncated) live in
  shared memory; each worker writes its rows in place, so one step is one small message per worker
  (the actions of its slice) and one small reply (the per-episode stats), not a pickled observation.
* every env gets its own seed from :func:`~marl.envs.base.derive_seeds`; it is seeded once, at its
  first reset, and its later episodes continue its own RNG. Which worker steps an env does not
  change its episodes, so ``num_workers`` does not change results.
* the time limit is enforced here too: an episode that reaches ``episode_limit`` steps without the
  task ending is ``truncated``. The spec's ``episode_limit`` is therefore an upper bound on every
  episode, which the runner and the buffer rely on.
* ``state`` is chosen by ``env.state``: ``native`` (the env's own global state), ``concat_obs``
  (the agents' observations concatenated, as EPyMARL does when an env has no state), ``auto``
  (native if the env has one, else concat_obs) or ``none`` (state_dim 0: a mixer that needs a
  state then fails at start-up).

A single-env adapter implements :class:`SingleEnv`: ``reset(seed)`` and ``step(actions)`` return a
:class:`Transition` of numpy arrays already padded to the batch layout. Worker processes start from
a fork server that has imported this module once, so a worker starts in well under a second.
"""

from __future__ import annotations

import atexit
import importlib
import multiprocessing as mp
import multiprocessing.util  # noqa: F401  (imported before our atexit hook, so ours runs first)
import signal
import traceback
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from marl.config import ComponentConfig
from marl.envs.base import EnvSpec, TimeStep, derive_seeds
from marl.errors import ConfigError

STATE_SOURCES = ("auto", "native", "concat_obs", "none")
TEAM_REWARDS = ("sum", "mean")


@dataclass
class PythonEnvConfig(ComponentConfig):
    """Keys shared by every per-process Python env.

    ``num_workers``: 0 steps the envs in the training process; N > 0 spreads them over N worker
    processes (at most one per env). ``state``: auto | native | concat_obs | none (see the module
    docstring). ``team_reward``: how per-agent rewards become the one team reward (sum | mean).
    """

    num_workers: int = 0
    state: str = "auto"
    team_reward: str = "sum"


@dataclass(frozen=True)
class EnvInfo:
    """Static facts of one single env, already in the padded batch layout.

    ``state_dim`` is the size of the env's own global state (0 when it has none); ``stats`` names
    the per-episode statistics its transitions carry (e.g. SMAC's ``battle_won``).
    """

    n_agents: int
    obs_dim: int
    n_actions: int
    episode_limit: int
    state_dim: int = 0
    stats: tuple[str, ...] = ()


@dataclass
class Transition:
    """One env's reset or step, in the batch layout: obs [n, obs_dim] float32, avail [n, A] bool,
    state [state_dim] float32 (None when the env has no state of its own)."""

    obs: np.ndarray
    avail: np.ndarray
    state: np.ndarray | None = None
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    stats: dict[str, float] = field(default_factory=dict)


class SingleEnv(Protocol):
    """One episode-at-a-time environment behind the batch. ``reset(seed)`` with ``seed=None``
    continues the env's own RNG; ``step`` takes one action per agent (int array [n])."""

    info: EnvInfo

    def reset(self, seed: int | None) -> Transition: ...

    def step(self, actions: np.ndarray) -> Transition: ...

    def close(self) -> None: ...


# --- helpers shared by the adapters -------------------------------------------------------------

def team_reward(rewards: Any, mode: str) -> float:
    """A scalar team reward from a scalar, a list/array or a dict of per-agent rewards."""
    if isinstance(rewards, dict):
        rewards = list(rewards.values())
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim == 0:
        return float(r)
    if r.size == 0:
        return 0.0
    return float(r.sum() if mode == "sum" else r.mean())


def pad_obs(obs: Sequence[Any], obs_dim: int) -> np.ndarray:
    """Per-agent observations (any shapes, flattened) -> [n, obs_dim] float32, zero-padded."""
    rows = [np.asarray(o, dtype=np.float32).reshape(-1) for o in obs]
    if all(r.shape[0] == obs_dim for r in rows):
        return np.stack(rows)
    out = np.zeros((len(rows), obs_dim), dtype=np.float32)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out


def action_sizes_mask(sizes: Sequence[int]) -> np.ndarray:
    """[n, max(sizes)] bool: True on each agent's real actions, False on the padding."""
    return np.arange(max(sizes))[None, :] < np.asarray(sizes)[:, None]


def load_callable(path: str, key: str) -> Callable[..., Any]:
    """Resolve ``"pkg.module:attr.attr"`` to a callable; errors name the config ``key``."""
    module_name, sep, attr = str(path).partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{key}={path!r} is invalid: give an import path 'pkg.module:callable'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{key}={path!r} is invalid: cannot import {module_name!r} ({e})") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{key}={path!r} is invalid: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{key}={path!r} is invalid: {attr!r} is not callable")
    return obj


def check_common(cfg: Any) -> None:
    """Validate the keys of :class:`PythonEnvConfig` (and ``time_limit`` where the env has one)."""
    if str(cfg.state) not in STATE_SOURCES:
        raise ConfigError(f"env.state={cfg.state!r} is invalid: choose one of {', '.join(STATE_SOURCES)}")
    if str(cfg.team_reward) not in TEAM_REWARDS:
        raise ConfigError(f"env.team_reward={cfg.team_reward!r} is invalid: choose one of "
                          f"{', '.join(TEAM_REWARDS)}")
    if int(cfg.num_workers) < 0:
        raise ConfigError(f"env.num_workers={cfg.num_workers!r} is invalid: must be >= 0 (0 = in-process)")
    if "time_limit" in cfg and int(cfg.time_limit) <= 0:
        raise ConfigError(f"env.time_limit={cfg.time_limit!r} is invalid: must be > 0")


# --- the envs of one process ----------------------------------------------------------------------

class _EnvSlice:
    """The envs of one worker (or of the main process), writing rows ``lo:lo+k`` of the buffers."""

    def __init__(self, make_env: Callable[[], SingleEnv], seeds: Sequence[int], buffers: dict[str, np.ndarray],
                 lo: int, first: SingleEnv | None = None) -> None:
        k = len(seeds)
        self.envs: list[SingleEnv] = [first] if first is not None and k else []
        while len(self.envs) < k:
            self.envs.append(make_env())
        self.info = self.envs[0].info
        self.lo, self.seeds = lo, list(seeds)
        self.seeded = [False] * k
        self.t = [0] * k
        self.ended = [True] * k  # an env must be reset before its first step
        self.buf = {name: b[lo: lo + k] for name, b in buffers.items()}

    def _write(self, i: int, tr: Transition) -> None:
        b = self.buf
        b["obs"][i] = tr.obs
        b["avail"][i] = tr.avail
        if b["state"].shape[-1]:
            b["state"][i] = tr.state
        b["reward"][i] = tr.reward
        b["terminated"][i] = tr.terminated
        b["truncated"][i] = tr.truncated

    def reset(self, rows: Sequence[int]) -> None:
        for i in rows:
            tr = self.envs[i].reset(None if self.seeded[i] else self.seeds[i])
            self.seeded[i] = True
            tr.reward, tr.terminated, tr.truncated = 0.0, False, False
            self._write(i, tr)
            self.t[i], self.ended[i] = 0, False

    def step(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        stats = {name: np.zeros(len(self.envs), dtype=np.float32) for name in self.info.stats}
        limit = self.info.episode_limit
        for i, env in enumerate(self.envs):
            if self.ended[i]:
                raise RuntimeError(f"env {self.lo + i} was stepped after its episode ended: call reset(mask) first")
            tr = env.step(actions[i])
            self.t[i] += 1
            tr.terminated = bool(tr.terminated)
            tr.truncated = not tr.terminated and (bool(tr.truncated) or self.t[i] >= limit)
            self.ended[i] = tr.terminated or tr.truncated
            self._write(i, tr)
            for name, value in tr.stats.items():
                if name in stats:
                    stats[name][i] = value
        return stats

    def close(self) -> None:
        for env in self.envs:
            try:
                env.close()
            except Exception:  # closing is best effort: a broken env must not hide the real error
                pass


def _describe(exc: BaseException) -> tuple[BaseException | None, str]:
    text = "".join(traceback.format_exception(exc))
    try:
        import pickle

        pickle.dumps(exc)
        return exc, text
    except Exception:
        return None, text


def _worker(conn: Any, make_env: Callable[[], SingleEnv], seeds: list[int], buffers: dict[str, torch.Tensor],
            lo: int) -> None:
    """A worker's loop: build its envs, then serve reset/step/close until told to stop.

    Signals meant for the training process (Ctrl-C, SLURM's SIGTERM/USR1/USR2) are ignored here,
    so that the trainer can finish its step and write a checkpoint; a worker exits when the trainer
    closes the pipe, including when the trainer dies.
    """
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    torch.set_num_threads(1)
    try:
        envs = _EnvSlice(make_env, seeds, {k: v.numpy() for k, v in buffers.items()}, lo)
    except BaseException as exc:
        conn.send(("error", _describe(exc)))
        return
    conn.send(("ok", None))
    try:
        while True:
            try:
                cmd, arg = conn.recv()
            except (EOFError, OSError):
                break
            if cmd == "close":
                break
            try:
                conn.send(("ok", getattr(envs, cmd)(arg)))
            except Exception as exc:
                conn.send(("error", _describe(exc)))
    finally:
        envs.close()
        conn.close()


_LIVE: "weakref.WeakSet[PythonVecEnv]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Close forgotten envs before multiprocessing's own exit hook joins their workers."""
    for env in list(_LIVE):
        env.close()


def _context() -> Any:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["marl.envs.python_vec"])  # no effect once the server runs
    return ctx


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
        self._workers: list[tuple[Any, Any, int, int]] = []  # (process, conn, lo, hi)
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
            self._local: _EnvSlice | None = _EnvSlice(make_env, seeds, {k: v.numpy() for k, v in self._buf.items()},
                                                      0, first=first)
        else:
            first.close()
            self._local = None
            for v in self._buf.values():
                v.share_memory_()
            self._start_workers(make_env, list(seeds), workers)
        _LIVE.add(self)

    # --- workers --------------------------------------------------------------------------------
    def _start_workers(self, make_env: Callable[[], SingleEnv], seeds: list[int], workers: int) -> None:
        ctx = _context()
        bounds = np.linspace(0, self.num_envs, workers + 1).round().astype(int)
        try:
            for w in range(workers):
                lo, hi = int(bounds[w]), int(bounds[w + 1])
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker, args=(child, make_env, seeds[lo:hi], self._buf, lo),
                                   daemon=True, name=f"marl-env-{w}")
                proc.start()
                child.close()
                self._workers.append((proc, parent, lo, hi))
            for w in range(workers):
                self._receive(w)
        except BaseException:
            self.close()
            raise

    def _receive(self, w: int) -> Any:
        proc, conn, lo, hi = self._workers[w]
        try:
            status, payload = conn.recv()
        except (EOFError, OSError) as e:
            proc.join(timeout=1)
            raise RuntimeError(f"env worker {w} (envs {lo}..{hi - 1}) died (exit code {proc.exitcode}); its "
                               "traceback, if any, is on stderr") from e
        if status == "error":
            exc, text = payload
            if isinstance(exc, ConfigError):
                raise ConfigError(str(exc))
            raise RuntimeError(f"env worker {w} (envs {lo}..{hi - 1}) failed:\n{text}") from exc
        return payload

    # --- the protocol -----------------------------------------------------------------------------
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
        if self._local is not None:
            self._local.reset(rows)
        else:
            busy = []
            for w, (_, conn, lo, hi) in enumerate(self._workers):
                mine = [r - lo for r in rows if lo <= r < hi]
                if mine:
                    conn.send(("reset", mine))
                    busy.append(w)
            for w in busy:
                self._receive(w)
        return self._timestep()

    def step(self, actions: torch.Tensor) -> TimeStep:
        a = actions.detach().cpu().numpy().astype(np.int64, copy=False)
        if self._local is not None:
            stats = self._local.step(a)
        else:
            for _, conn, lo, hi in self._workers:
                conn.send(("step", a[lo:hi]))
            parts = [self._receive(w) for w in range(len(self._workers))]
            stats = {k: np.concatenate([p[k] for p in parts]) for k in self.spec.stats}
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
        if self._local is not None:
            self._local.close()
        for proc, conn, _, _ in self._workers:
            try:
                conn.send(("close", None))
            except (OSError, ValueError):
                pass
        for proc, conn, _, _ in self._workers:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
            conn.close()
        self._workers = []

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
