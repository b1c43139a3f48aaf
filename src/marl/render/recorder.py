"""Play episodes with a trained policy and keep a captioned frame of every state they pass through.

:class:`Recorder` wraps a one-env :class:`~marl.envs.base.VecEnv` and is played by the ordinary
:class:`~marl.runner.Runner` and :func:`~marl.runner.play`, so a rendered episode is acted exactly as
an evaluated one. The runner resets an env right after its last step; the recorder therefore grabs
each frame inside ``step``, before that reset.

An episode of T steps gives **T + 1 frames**: the first state (caption "first state", return 0),
then the state after each step, captioned with the step, the team return so far and the actions
that led to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from marl.envs.base import TimeStep, VecEnv
from marl.render.overlay import caption, step_lines
from marl.render.sources import FrameSource, frame_source


@dataclass
class Episode:
    frames: list[np.ndarray] = field(default_factory=list)
    team_return: float = 0.0
    length: int = 0


class Recorder:
    """A :class:`~marl.envs.base.VecEnv` of one env that records :class:`Episode` s as it is played."""

    def __init__(self, env: VecEnv, source: FrameSource) -> None:
        if env.num_envs != 1:
            raise ValueError(f"a Recorder renders one env, got num_envs={env.num_envs}")
        self.env, self.source = env, source
        self.spec, self.num_envs = env.spec, 1
        self.episodes: list[Episode] = []
        self.current: Episode | None = None

    def _frame(self, actions: np.ndarray | None) -> np.ndarray:
        ep = self.current
        names = None if actions is None else [self.source.action_name(i, int(a)) for i, a in enumerate(actions)]
        return caption(self.source.frame(actions),
                       step_lines(ep.length, self.spec.episode_limit, ep.team_return, names, self.spec.n_agents))

    def reset(self, mask: torch.Tensor | None = None) -> TimeStep:
        ts = self.env.reset(mask)
        if self.current is not None and self.current.length:
            self.episodes.append(self.current)
        self.current = Episode()
        self.current.frames.append(self._frame(None))
        return ts

    def step(self, actions: torch.Tensor) -> TimeStep:
        self.source.before_step()
        ts = self.env.step(actions)
        ep = self.current
        ep.length += 1
        ep.team_return += float(ts.reward[0])
        ep.frames.append(self._frame(actions[0].cpu().numpy()))
        return ts

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        self.env.close()


def build_env(env_cfg: Any, seed: int) -> VecEnv:
    """One copy of the run's env, stepped in this process (a renderer reads it directly)."""
    from omegaconf import OmegaConf

    from marl.registry import ENVS

    cfg = OmegaConf.create(OmegaConf.to_container(env_cfg, resolve=True))
    if "num_workers" in cfg:
        cfg.num_workers = 0
    return ENVS.build(cfg, num_envs=1, seed=seed)


def record(env_cfg: Any, policy: Any, n_episodes: int, seed: int, epsilon: float = 0.0,
           device: torch.device | str = "cpu") -> list[Episode]:
    """``n_episodes`` rendered episodes of ``policy`` on a fresh copy of the env ``env_cfg`` (env and
    ε-draws seeded by ``seed``). Raises :class:`~marl.render.errors.RenderError` before the first
    step when the env cannot render."""
    from marl.runner import Runner, play

    env = build_env(env_cfg, seed)
    try:
        recorder = Recorder(env, frame_source(env, env_cfg))
        generator = torch.Generator(device).manual_seed(seed)
        runner = Runner(recorder, policy, torch.device(device), generator, record=False, check_finite=False)
        play(runner, n_episodes, epsilon)
        return recorder.episodes[:n_episodes]
    finally:
        env.close()
