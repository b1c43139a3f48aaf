"""The batched environment protocol shared by every environment.

A :class:`VecEnv` steps ``num_envs`` copies of a cooperative task as one call. Everything crosses
the boundary as torch tensors with a leading batch dimension B:

========== ====================== =======
field      shape                  dtype
========== ====================== =======
obs        [B, n_agents, obs_dim] float32
state      [B, state_dim]         float32
avail      [B, n_agents, n_act]   bool
reward     [B]                    float32 (team reward)
terminated [B]                    bool    (the task ended: do not bootstrap)
truncated  [B]                    bool    (time limit: bootstrap from the final obs)
========== ====================== =======

Envs do not reset themselves. After a step that ended some episodes the runner stores the final
observation (needed to bootstrap a truncated episode) and then calls ``reset(mask)`` for exactly
those envs; the returned batch has fresh first observations in the masked rows and the current
ones elsewhere. ``reset()`` with no mask resets all envs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class EnvSpec:
    """Static facts about a task, read by the components before the first step.

    ``has_state`` is False when the task has no global state of its own (``state`` is then the
    concatenation of observations, as EPyMARL does, and QMIX says so at start-up).
    ``shared_reward`` is True when the env hands out one team reward, its own or the adapter's
    aggregate of per-agent rewards (``env.team_reward``); the value-decomposition learners need it.
    """

    n_agents: int
    obs_dim: int
    state_dim: int
    n_actions: int
    episode_limit: int
    has_state: bool = True
    shared_reward: bool = True
    stats: tuple[str, ...] = field(default_factory=tuple)


@dataclass
class TimeStep:
    """One batched step of all envs (see the module docstring for shapes)."""

    obs: torch.Tensor
    state: torch.Tensor
    avail: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    info: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def done(self) -> torch.Tensor:
        return self.terminated | self.truncated


@runtime_checkable
class VecEnv(Protocol):
    """What the runner needs from an environment. See the module docstring."""

    spec: EnvSpec
    num_envs: int

    def reset(self, mask: torch.Tensor | None = None) -> TimeStep: ...

    def step(self, actions: torch.Tensor) -> TimeStep: ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the same episodes bitwise, or {} if impossible."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def derive_seeds(seed: int, n: int, stream: str) -> list[int]:
    """Distinct, reproducible seeds for ``n`` env copies on a named stream ("train", "eval").

    Derived from the run's root seed with numpy's SeedSequence (docs/architecture.md, invariant 5), so that
    train and eval envs never share a seed and each copy differs.
    """
    import zlib

    import numpy as np

    key = zlib.crc32(stream.encode())  # the whole name counts: "python-a" != "python-b"
    children = np.random.SeedSequence([seed, key]).spawn(n)
    return [int(c.generate_state(1)[0]) for c in children]
