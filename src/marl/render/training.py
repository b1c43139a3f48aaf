"""The opt-in render during training (``render.interval``, off by default): one greedy episode at
every interval, into ``<run>/renders/`` and W&B, so a sweep's progress can be watched as behaviour.

Each render plays one greedy episode on its own copy of the env (seed stream "render" of the run's
root seed, the same first state every time, so successive renders show the same situation handled
as training goes on); the training and eval envs and every RNG of the run are untouched, so a run
learns exactly the same with renders on or off. The file is named by the env step it was taken at,
``renders/env_steps=000010000.gif``. W&B gets it as a ``wandb.Video`` (online or offline; an
offline run uploads it with ``wandb sync``). Like W&B, a render that fails during training is
reported once and switched off, never stopping the run; an env that cannot render at all is refused
at start-up.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from marl.checkpoint import rng_state, set_rng_state
from marl.clock import Clock, Every
from marl.envs.base import derive_seeds
from marl.render.recorder import build_env, record
from marl.render.sources import frame_source
from marl.render.video import write_video
from marl.run_folder import RENDERS_DIR

WANDB_KEY = "render/episode"


class TrainingRender:
    """Renders one greedy episode of a training run every ``cfg.render.interval`` ``cfg.render.unit``."""

    def __init__(self, cfg: Any, run_dir: Path, device: torch.device) -> None:
        self.every = Every(cfg.render.interval, cfg.render.unit)
        self.env_cfg, self.format, self.device = cfg.env, str(cfg.render.format), device
        self.folder = Path(run_dir) / RENDERS_DIR
        (self.seed,) = derive_seeds(int(cfg.seed), 1, "render")
        self.failed = False
        saved = rng_state({})
        env = build_env(self.env_cfg, self.seed)  # an env that cannot render fails here, at start-up
        try:
            frame_source(env, self.env_cfg)
        finally:
            env.close()
            set_rng_state(saved, {})

    def due(self, clock: Clock) -> bool:
        return not self.failed and self.every.due(clock)

    def __call__(self, clock: Clock, policy: Any, sinks: list[Any]) -> Path | None:
        """Render one greedy episode now; write it and hand it to the W&B sinks. None if it failed."""
        saved = rng_state({})  # an env's construction may seed a global RNG (VMAS seeds torch's)
        try:
            (episode,) = record(self.env_cfg, policy, 1, self.seed, epsilon=0.0, device=self.device)
            path = write_video(episode.frames, self.folder / f"env_steps={clock.env_steps:09d}.{self.format}")
        except Exception as exc:  # a render must never stop training
            self.failed = True
            print(f"render at env_steps={clock.env_steps} failed, no more renders in this run: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            return None
        finally:
            set_rng_state(saved, {})
        log_video(sinks, path, clock)
        return path

    def state_dict(self) -> dict[str, int]:
        return self.every.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.every.load_state_dict(state)


def log_video(sinks: list[Any], path: Path, clock: Clock) -> None:
    """``path`` as a ``wandb.Video`` at ``clock``'s env step, in every live W&B sink."""
    from marl.logger import WandbSink

    for sink in sinks:
        if not isinstance(sink, WandbSink) or sink.failed or sink.run is None:
            continue
        try:
            import wandb

            sink.run.log({WANDB_KEY: wandb.Video(str(path), format=path.suffix.lstrip(".")), **clock.as_dict()})
        except Exception as exc:
            sink._fail("video logging", exc)
