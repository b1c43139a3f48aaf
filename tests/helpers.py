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


def final_eval(run_dir: Path) -> float:
    return [r for r in read_metrics(run_dir) if "eval/return_mean" in r][-1]["eval/return_mean"]
