"""Checkpoints you can trust, and the RNG state of a run (docs/architecture.md, invariant 6).

A checkpoint is written to a temporary file unique to the writing process, fsynced, and renamed
into place; the checkpoint it replaces is kept beside it as ``checkpoint.prev.pt``. A crash at
any moment therefore leaves at least one complete checkpoint, and a damaged newest one (a torn
copy, a bad disk block) falls back to its predecessor with a message saying so.

Checkpoints are loaded with ``weights_only=True``: tensors, plain containers, numpy arrays (RNG
and SMAX states) and the project's own :class:`~marl.envs.base.TimeStep`, never arbitrary code,
so a run folder from elsewhere (``resume=PATH``) cannot execute anything when it is read.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marl.envs.base import TimeStep
from marl.errors import WriteError, RunFolderError
from marl.run_folder import CHECKPOINT_FILE, PREVIOUS_FILE, free_space

# What a checkpoint may contain beyond tensors and plain containers.
_np_core = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core
SAFE_GLOBALS: list[Any] = [TimeStep, np.ndarray, np.dtype, _np_core.multiarray._reconstruct,
                           *(getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType"))]


def previous_path(path: Path) -> Path:
    return path.with_name(PREVIOUS_FILE) if path.name == CHECKPOINT_FILE else path.with_name(path.name + ".prev")


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path``, keeping the checkpoint it replaces as the previous generation.

    On any OS error (a full disk, a quota, a vanished mount) the temporary file is removed, the
    existing checkpoints are left as they were, and :class:`WriteError` says where and why.
    """
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except (OSError, RuntimeError) as exc:
        # torch's zip writer reports a failed write as a RuntimeError ("unexpected pos ..."): a disk
        # with (almost) nothing left while the temp file still exists is the full disk it hides.
        full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or _nearly_full(path.parent)
        reason = (os.strerror(errno.ENOSPC) if full and not isinstance(exc, OSError)
                  else getattr(exc, "strerror", None) or str(exc).strip().splitlines()[0][:200])
        tmp.unlink(missing_ok=True)
        kept = [p.name for p in (path, previous_path(path)) if p.exists()]
        raise WriteError(
            f"could not write the checkpoint {path}: {reason} ({free_space(path.parent)}). "
            + (f"The existing checkpoint ({', '.join(kept)}) is intact: " if kept else "")
            + ("free some space (or set checkpoint.save_buffer=false), then " if full else "fix that, then ")
            + "start the run again in the same folder to resume it") from exc


def _nearly_full(directory: Path) -> bool:
    try:
        return shutil.disk_usage(directory).free < 2**20
    except OSError:
        return False


def _fsync_dir(directory: Path) -> None:
    """Make the renames durable (a power cut after os.replace could otherwise undo them)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path: Path) -> dict[str, Any]:
    """Read one checkpoint without unpickling code (see the module docstring)."""
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        return torch.load(path, map_location="cpu", weights_only=True)


def _why_unreadable(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "Weights only load failed" in str(exc):
        return "it holds objects that would run code when loaded, which marl never writes"
    return f"{type(exc).__name__}: {text[:200]}"


def load_latest(run_dir: Path) -> dict[str, Any] | None:
    """The newest checkpoint of ``run_dir`` that reads, or None if it has none.

    Falls back to the previous generation when the newest is damaged (and says so on stderr);
    raises :class:`RunFolderError` naming the files and the choices when none reads.
    """
    newest, older = run_dir / CHECKPOINT_FILE, run_dir / PREVIOUS_FILE
    candidates = [p for p in (newest, older) if p.exists()]
    if not candidates:
        return None
    bad: list[str] = []
    for path in candidates:
        try:
            state = load(path)
        except Exception as exc:  # torch raises RuntimeError, pickle errors, EOFError, ... on damage
            bad.append(f"{path} is unreadable ({_why_unreadable(exc)})")
            continue
        if bad or path == older:
            print(("; ".join(bad) + ". " if bad else f"{newest} is missing. ")
                  + f"Resuming from the previous checkpoint {path}.", file=sys.stderr, flush=True)
        return state
    raise RunFolderError(
        "; ".join(bad) + ", and there is no older checkpoint that reads. Either restore a good copy of "
        f"{newest}, or move the checkpoint files away to start this run afresh in the same folder "
        f"(mv {newest} {newest}.bad).")


def seed_everything(seed: int) -> None:
    """Seed the global RNGs from the run's root seed (parameter init uses torch's)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "generators": {k: g.get_state() for k, g in generators.items()}}


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for k, g in generators.items():
        g.set_state(state["generators"][k])
