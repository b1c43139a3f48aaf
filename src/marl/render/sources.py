"""Where each env's picture comes from: one :class:`FrameSource` per kind of env, built by :func:`frame_source`.

What each package offers, used as it is:

* LBF and RWARE: their own pyglet viewers, ``unwrapped.render(mode="rgb_array")`` (an X display is
  needed: :mod:`marl.render.display` starts ``Xvfb`` where there is none);
* MPE (and any PettingZoo or Gymnasium env with an ``rgb_array`` render mode): ``render()`` with
  ``render_mode="rgb_array"`` (MPE draws with pygame and needs no display);
* VMAS: ``Environment.render(mode="rgb_array", env_index=0)`` (pyglet, so a display too);
* SMAX: jaxmarl's visualiser animates a whole episode with matplotlib after the fact, so frames are
  drawn here from the battle state instead (:mod:`marl.render.smax`);
* the matrix games: a picture of the payoff table with the chosen joint action
  (:mod:`marl.render.matrix`).

An env with none of these (SMAC, a custom env without a renderer) is refused with one line naming it.
Python envs are rendered from an env built in this process (``env.num_workers=0``).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from marl.render.display import ensure_display
from marl.render.errors import RenderError

NEEDS_DISPLAY = ("lbf", "rware", "vmas")  # pyglet viewers
ACTION_NAMES: dict[str, tuple[str, ...]] = {
    "lbf": ("NONE", "NORTH", "SOUTH", "WEST", "EAST", "LOAD"),   # lbforaging.foraging.environment.Action
    "rware": ("NOOP", "FORWARD", "LEFT", "RIGHT", "TOGGLE_LOAD"),  # rware.warehouse.Action
    "mpe": ("stay", "left", "right", "down", "up"),              # mpe2's discrete moves (simple_spread)
}


class FrameSource(Protocol):
    """The picture of env row 0. ``before_step`` is called just before each step (the matrix game
    shows the table that step is played on); ``action_name`` names an agent's action."""

    def before_step(self) -> None: ...

    def frame(self, actions: np.ndarray | None) -> np.ndarray:
        """The picture after the step that took ``actions`` (row 0's [n]; None: a fresh episode)."""
        ...

    def action_name(self, agent: int, action: int) -> str: ...


class _Source:
    """A source whose picture is a call returning an [H, W, 3] (or RGBA) array."""

    def __init__(self, name: str, draw: Callable[[], Any], names: Sequence[str] | None = None) -> None:
        self.name, self.draw, self.names = name, draw, names

    def before_step(self) -> None:
        pass

    def frame(self, actions: np.ndarray | None = None) -> np.ndarray:
        try:
            image = self.draw()
        except RenderError:
            raise
        except Exception as exc:
            text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise RenderError(f"env.name={self.name!r} cannot render: {type(exc).__name__}: {text}") from exc
        if image is None or np.asarray(image).ndim != 3:
            raise RenderError(f"env.name={self.name!r} cannot render: its render() returned "
                              f"{type(image).__name__}, not an RGB image")
        return np.asarray(image)[..., :3].astype(np.uint8)

    def action_name(self, agent: int, action: int) -> str:
        return self.names[action] if self.names and action < len(self.names) else str(action)


def _python_env(env: Any, name: str) -> Any:
    """The first single env inside a :class:`~marl.envs.python_vec.PythonVecEnv` stepped in this process."""
    single = getattr(getattr(env, "_envs", None), "envs", None)
    if not single:
        raise RenderError(f"env.name={name!r} cannot render from worker processes: build it with env.num_workers=0")
    return single[0]


def _gym_like(raw: Any, name: str) -> Callable[[], Any]:
    """``render`` of a Gymnasium or PettingZoo env: old style ``render(mode=...)``, else ``render_mode``."""
    render = getattr(raw, "render", None)
    if render is None:
        raise RenderError(f"env.name={name!r} cannot render: the env has no render()")
    try:
        takes_mode = "mode" in inspect.signature(render).parameters
    except (TypeError, ValueError):
        takes_mode = False
    if takes_mode:
        return lambda: render(mode="rgb_array")
    modes = (getattr(raw, "metadata", None) or {}).get("render_modes", ())
    if "rgb_array" not in modes:
        raise RenderError(f"env.name={name!r} cannot render: the env offers no 'rgb_array' render mode "
                          f"(its metadata lists {list(modes)})")
    raw.render_mode = "rgb_array"
    return render


def frame_source(env: Any, env_cfg: Any) -> FrameSource:
    """The :class:`FrameSource` of ``env`` (row 0), built from ``env.name=...`` in ``env_cfg``."""
    from marl.envs.matrix import MatrixGame

    name = str(env_cfg.name)
    if name in NEEDS_DISPLAY:
        ensure_display(name)
    if isinstance(env, MatrixGame):
        from marl.render.matrix import MatrixSource

        return MatrixSource(env, name)
    if name == "smax":
        from marl.render.smax import SmaxSource

        return SmaxSource(env)
    if name == "vmas":
        return _Source(name, lambda: env.env.render(mode="rgb_array", env_index=0))
    from marl.envs.gymnasium import GymMultiAgentEnv
    from marl.envs.pettingzoo import PettingZooParallelEnv

    single = _python_env(env, name) if hasattr(env, "_envs") else None
    if isinstance(single, (GymMultiAgentEnv, PettingZooParallelEnv)):
        return _Source(name, _gym_like(single.env.unwrapped, name), ACTION_NAMES.get(name))
    raise RenderError(f"env.name={name!r} cannot render: marl has no renderer for it (it renders lbf, rware, mpe, "
                      "vmas, smax, the matrix games, and Gymnasium/PettingZoo envs with an rgb_array render mode)")
