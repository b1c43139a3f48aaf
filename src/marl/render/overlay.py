"""The caption under each frame: the step, the team reward so far and the actions just taken.

A band below the picture, not on it, so that nothing of the env is hidden. Frames are scaled
(nearest neighbour) to at least ``MIN_WIDTH`` pixels wide so the text is readable next to small
renders, and padded to a multiple of 16 pixels, the block size of the H.264 encoder.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MIN_WIDTH = 480
BLOCK = 16
PER_LINE = 4


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def caption(frame: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """``frame`` [H, W, 3] uint8 with ``lines`` of text in a white band below it."""
    img = Image.fromarray(np.ascontiguousarray(frame[..., :3]).astype(np.uint8))
    if img.width < MIN_WIDTH:
        scale = -(-MIN_WIDTH // img.width)
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    size = max(15, img.width // 40)  # readable on large renders too
    line_px = size + 6
    band = line_px * len(lines) + 8
    width = -(-img.width // BLOCK) * BLOCK
    height = -(-(img.height + band) // BLOCK) * BLOCK
    out = Image.new("RGB", (width, height), "white")
    out.paste(img, (0, 0))
    draw, font = ImageDraw.Draw(out), _font(size)
    for i, line in enumerate(lines):
        draw.text((6, img.height + 4 + i * line_px), line, fill="black", font=font)
    return np.asarray(out)


def step_lines(t: int, limit: int, team_return: float, actions: Sequence[str] | None, n_agents: int) -> list[str]:
    """The caption of the frame after step ``t`` (``t=0``: the first state, no action yet): the step,
    the team return so far, then the action of each agent, ``PER_LINE`` agents a line (always the
    same number of lines for ``n_agents``, so all frames of an episode have one size)."""
    rows = -(-n_agents // PER_LINE)
    names = list(actions) if actions is not None else ["-"] * n_agents
    lines = [f"step {t}/{limit}   team return {team_return:.4g}" + ("   (first state)" if actions is None else "")]
    for r in range(rows):
        lines.append("   ".join(f"agent {i}: {names[i]}" for i in range(r * PER_LINE, min(n_agents, (r + 1) * PER_LINE))))
    return lines
