"""Replay buffers and the episode layout they share with the runner.

An episode batch is a dict of tensors with a leading batch dim and a time dim. Observations,
states and masks have T+1 slots (the last holds the final observation, which a truncated episode
bootstraps from); actions, rewards, ``terminated`` and ``filled`` have T slots, ``filled[t]``
marking real steps. T is the env's episode limit; shorter episodes are padded.
"""

from __future__ import annotations

import torch

from marl.envs.base import EnvSpec

Episodes = dict[str, torch.Tensor]


def episode_layout(spec: EnvSpec) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Per-episode shapes and dtypes of every stored field."""
    T, n = spec.episode_limit, spec.n_agents
    return {
        "obs": ((T + 1, n, spec.obs_dim), torch.float32),
        "state": ((T + 1, spec.state_dim), torch.float32),
        "avail": ((T + 1, n, spec.n_actions), torch.bool),
        "actions": ((T, n), torch.long),
        "reward": ((T,), torch.float32),
        "terminated": ((T,), torch.bool),
        "filled": ((T,), torch.bool),
    }


def truncated(episodes: Episodes) -> torch.Tensor:
    """[B, T] bool: the steps where an episode was cut short (a time limit), not ended by its task.

    Stored episodes are whole: each ends at its last ``filled`` step, ``terminated`` says whether
    the task ended there, and every other end is a truncation (the env's time limit, or the
    batch's ``episode_limit``). So the two endings are stored apart without a field of their own,
    and whether a truncation is bootstrapped stays the learner's choice (``learner.time_limit_end``).
    """
    filled = episodes["filled"]
    last = filled & ~torch.cat([filled[:, 1:], torch.zeros_like(filled[:, :1])], dim=1)
    return last & ~episodes["terminated"]


def allocate(spec: EnvSpec, n: int, device: torch.device | str = "cpu") -> Episodes:
    return {k: torch.zeros((n, *shape), dtype=dtype, device=device)
            for k, (shape, dtype) in episode_layout(spec).items()}
