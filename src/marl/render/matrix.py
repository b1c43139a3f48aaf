"""A matrix game's frame: the payoff table being played, with the chosen joint action marked.

Rows are agent 1's actions, columns agent 2's (as :mod:`marl.qtable` prints them). The frame after
a step shows the table that step was played on, the chosen cell in yellow with its payoff; the first
frame shows the first table with nothing chosen yet. Multi-step games name their tables (the
two-step game's state 1, 2A and 2B) and say which one comes next.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from marl.envs.matrix import MatrixGame

CELL, MARGIN = 80, 60


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


class MatrixSource:
    def __init__(self, env: MatrixGame, name: str) -> None:
        self.env, self.name = env, name
        n_states = env.payoffs.shape[0]
        labels = [label for label, _ in env.table_states]
        self.labels = labels if len(labels) == n_states else [f"matrix {s}" for s in range(n_states)]
        self.played: int | None = None  # the table the last step was played on

    def before_step(self) -> None:
        self.played = int(self.env.s[0])

    def action_name(self, agent: int, action: int) -> str:
        return f"a{action}"

    def frame(self, actions: np.ndarray | None) -> np.ndarray:
        env = self.env
        now = int(env.s[0])
        ended = bool(env.t[0] >= env.horizon)
        if actions is None:  # a fresh episode: the first table, nothing chosen yet
            self.played = None
        state = self.played if self.played is not None else now
        chosen = None if actions is None else (int(actions[0]), int(actions[1]))
        payoff = env.payoffs[state].tolist()
        A = len(payoff)
        w = h = MARGIN + A * CELL + 20
        img = Image.new("RGB", (max(w, 300), h + 40), "white")
        draw, font, small = ImageDraw.Draw(img), _font(22), _font(14)
        title = f"{self.name}: {self.labels[state]}"
        if self.played is not None and self.labels[now] != self.labels[state] and not ended:
            title += f" -> next {self.labels[now]}"
        draw.text((8, 6), title, fill="black", font=small)
        top = 40 + MARGIN - 20
        for a in range(A):
            draw.text((MARGIN + a * CELL + CELL // 2 - 8, top - 22), f"a{a}", fill="gray", font=small)
            draw.text((MARGIN - 30, top + a * CELL + CELL // 2 - 8), f"a{a}", fill="gray", font=small)
        for i in range(A):
            for j in range(A):
                x, y = MARGIN + j * CELL, top + i * CELL
                fill = "gold" if chosen == (i, j) else "white"
                draw.rectangle([x, y, x + CELL, y + CELL], fill=fill, outline="black", width=2)
                draw.text((x + 14, y + CELL // 2 - 12), f"{payoff[i][j]:g}", fill="black", font=font)
        return np.asarray(img)
