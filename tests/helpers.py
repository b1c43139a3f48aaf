"""Shared test utilities: compose a run config and read a run folder back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from marl.config import compose

QUIET = ("logger.wandb.mode=disabled", "logger.console=false")


def run_config(run_dir: Path, *overrides: str) -> DictConfig:
    return compose([*QUIET, f"run_dir={run_dir}", *overrides])


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    with open(Path(run_dir) / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def random_batch(spec: Any, lengths: list[int], seed: int = 0) -> dict[str, Any]:
    """Random episodes in the buffer layout: episode i has ``lengths[i]`` real steps and ends
    terminated when i is odd, truncated when even (both endings in one batch)."""
    import torch

    from marl.buffers import allocate

    g = torch.Generator().manual_seed(seed)
    b = allocate(spec, len(lengths))
    b["obs"].normal_(generator=g)
    b["state"].normal_(generator=g)
    b["avail"][:] = torch.rand(b["avail"].shape, generator=g) > 0.3
    b["actions"].random_(0, spec.n_actions, generator=g)
    b["reward"].normal_(generator=g)
    for i, length in enumerate(lengths):
        b["filled"][i, :length] = True
        b["terminated"][i, length - 1] = i % 2 == 1
    return b


def final_eval(run_dir: Path) -> float:
    return [r for r in read_metrics(run_dir) if "eval/return_mean" in r][-1]["eval/return_mean"]
