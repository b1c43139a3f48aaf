"""Uniform replay over whole episodes, in preallocated tensors (PyMARL's EpisodeBatch buffer).

Episodes are written as whole rows into a ring; ``sample`` draws distinct episodes uniformly and
trims the time dimension to the longest episode drawn, so short episodes cost short updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from marl.buffers import Episodes, allocate
from marl.config import ComponentConfig
from marl.envs.base import EnvSpec
from marl.registry import BUFFERS


@dataclass
class EpisodeBufferConfig(ComponentConfig):
    """``capacity`` in episodes (PyMARL: 5000). Stored on the CPU; batches move to the learner."""

    name: str = "episode"
    capacity: int = 5000


class EpisodeBuffer:
    def __init__(self, spec: EnvSpec, capacity: int) -> None:
        self.capacity = capacity
        self.data = allocate(spec, capacity)
        self.lengths = torch.zeros(capacity, dtype=torch.long)
        self.pos = 0
        self.size = 0

    def insert(self, episodes: Episodes) -> None:
        """Write k whole episodes, overwriting the oldest once full."""
        k = episodes["filled"].shape[0]
        if k == 0:
            return
        if k > self.capacity:  # only the newest fit
            episodes = {key: v[-self.capacity:] for key, v in episodes.items()}
            k = self.capacity
        idx = (self.pos + torch.arange(k)) % self.capacity
        for key, value in episodes.items():
            self.data[key][idx] = value.to(self.data[key].device)
        self.lengths[idx] = episodes["filled"].sum(dim=1).cpu()
        self.pos = (self.pos + k) % self.capacity
        self.size = min(self.size + k, self.capacity)

    def can_sample(self, batch_size: int) -> bool:
        return self.size >= batch_size

    def sample(self, batch_size: int, generator: torch.Generator) -> Episodes:
        return self.episodes(torch.randperm(self.size, generator=generator)[:batch_size])

    def episodes(self, idx: torch.Tensor) -> Episodes:
        """The stored episodes ``idx``, trimmed in time to the longest of them."""
        t = int(self.lengths[idx].max())
        return {
            key: (v[idx, : t + 1] if v.shape[1] == self.data["filled"].shape[1] + 1 else v[idx, :t])
            for key, v in self.data.items()
        }

    def nbytes(self) -> int:
        return sum(v.element_size() * v.numel() for v in self.data.values())

    def state_dict(self) -> dict[str, Any]:
        """Rows ``[0, size)`` as they lie (the ring fills from 0), so sampling resumes bitwise."""
        return {"data": {k: v[: self.size].clone() for k, v in self.data.items()},
                "pos": self.pos, "size": self.size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size, self.pos = int(state["size"]), int(state["pos"])
        for key, value in state["data"].items():
            self.data[key][: self.size] = value
        self.lengths.zero_()
        self.lengths[: self.size] = self.data["filled"][: self.size].sum(dim=1)


@BUFFERS.register("episode", config=EpisodeBufferConfig)
def make_episode_buffer(cfg: Any, spec: EnvSpec) -> EpisodeBuffer:
    return EpisodeBuffer(spec, cfg.capacity)
