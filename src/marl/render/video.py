"""Frames to a file: GIF (Pillow) or MP4 (H.264 through imageio-ffmpeg), chosen by the extension.

Every frame of an episode is kept: the caption (step, return so far) differs from frame to
frame, so Pillow's GIF writer, which merges identical consecutive frames, never drops one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from marl.render.errors import RenderError

FORMATS = (".gif", ".mp4")
FPS = 4  # slow enough to follow the agents' moves and read the caption


def check_path(path: Path) -> None:
    """Refuse, before anything runs, a file type this module cannot write."""
    if path.suffix.lower() not in FORMATS:
        hint = (" (to render into the run folder, put --render after the folders or write --render gif)"
                if path.is_dir() else "")
        raise RenderError(f"--render {path}: unknown extension {path.suffix or '(none)'!r}; "
                          f"use one of {', '.join(FORMATS)}{hint}")
    if path.suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError as exc:
            raise RenderError(f"--render {path}: MP4 needs imageio and imageio-ffmpeg ({exc}): "
                              "pip install -e '.[render]', or write a .gif") from exc


def write_video(frames: Sequence[np.ndarray], path: Path, fps: int = FPS) -> Path:
    """Write ``frames`` (each [H, W, 3] uint8, all of one size) to ``path``; returns ``path``."""
    check_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    else:
        import imageio.v2 as imageio

        with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=16, quality=7) as writer:
            for frame in frames:
                writer.append_data(frame)
    return path
