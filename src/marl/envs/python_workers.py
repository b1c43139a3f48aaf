"""Where the single envs of a :class:`~marl.envs.python_vec.PythonVecEnv` step: in this process
(:class:`EnvSlice`) or in worker processes (:class:`WorkerPool`). Both offer the same three calls,
``reset(rows)``, ``step(actions) -> stats`` and ``close()``, and write their rows of the batch
buffers (obs, state, avail, reward, terminated, truncated) in place.

* a worker owns a contiguous slice of the envs. The buffers live in shared memory, so one step
  is one small message per worker (the actions of its slice) and one small reply (the per-episode
  stats), not a pickled observation;
* every env is seeded once, at its first reset, and its later episodes continue its own RNG.
  Which worker steps an env does not change its episodes, so ``num_workers`` does not change
  results;
* the time limit is enforced here too: an episode that reaches ``episode_limit`` steps without
  the task ending is ``truncated``;
* workers ignore the trainer's stop signals (Ctrl-C, SLURM's SIGTERM/USR1/USR2) so that the
  trainer can finish its step and checkpoint; they exit when the trainer closes their pipe,
  including when it dies. Worker processes start from a fork server that has imported this
  module once, so a worker starts in well under a second.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import traceback
from typing import Any, Callable, Sequence

import numpy as np
import torch

from marl.envs.python_adapter import SingleEnv, Transition
from marl.errors import ConfigError


class EnvSlice:
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
        envs = EnvSlice(make_env, seeds, {k: v.numpy() for k, v in buffers.items()}, lo)
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


def _context() -> Any:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])  # no effect once the server runs
    return ctx


class WorkerPool:
    """``workers`` processes, each an :class:`EnvSlice` over a contiguous share of the envs.

    ``buffers`` must already be in shared memory (``share_memory_()``): the workers write their
    rows into them, the trainer reads them. ``make_env`` must be picklable. A worker's error is
    re-raised here with its traceback; a :class:`~marl.errors.ConfigError` stays one.
    """

    def __init__(self, make_env: Callable[[], SingleEnv], seeds: Sequence[int], buffers: dict[str, torch.Tensor],
                 workers: int) -> None:
        self._workers: list[tuple[Any, Any, int, int]] = []  # (process, conn, lo, hi)
        self._closed = False
        ctx = _context()
        seeds = list(seeds)
        bounds = np.linspace(0, len(seeds), workers + 1).round().astype(int)
        try:
            for w in range(workers):
                lo, hi = int(bounds[w]), int(bounds[w + 1])
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker, args=(child, make_env, seeds[lo:hi], buffers, lo),
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

    def reset(self, rows: Sequence[int]) -> None:
        """Reset the envs at batch ``rows``; only the workers that own one of them are asked."""
        busy = []
        for w, (_, conn, lo, hi) in enumerate(self._workers):
            mine = [r - lo for r in rows if lo <= r < hi]
            if mine:
                conn.send(("reset", mine))
                busy.append(w)
        for w in busy:
            self._receive(w)

    def step(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        """Step every env with ``actions`` [B, n]; the per-episode stats of all envs, in batch order."""
        for _, conn, lo, hi in self._workers:
            conn.send(("step", actions[lo:hi]))
        parts = [self._receive(w) for w in range(len(self._workers))]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
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
