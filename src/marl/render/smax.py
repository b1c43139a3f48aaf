"""A SMAX battle's frame, drawn from the battle state of env row 0.

jaxmarl's own visualiser (``SMAXVisualizer``) replays a finished episode with matplotlib and
interpolates between steps, so it cannot give one frame per step as the episode runs; this draws
the same picture from the state: the map, each living unit as a disc (allies blue, enemies red)
labelled with its type letter and index under a health bar, dead units as grey crosses.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = 480
ALLY, ENEMY, DEAD = (40, 90, 200), (200, 50, 40), (150, 150, 150)


class SmaxSource:
    def __init__(self, env: object) -> None:
        self.env = env
        self.smax = env.fns.env  # the jaxmarl HeuristicEnemySMAX
        self.n_allies = int(self.smax.num_allies)
        self.n_move = int(self.smax.num_movement_actions)
        try:
            self.font = ImageFont.load_default(size=12)
        except TypeError:
            self.font = ImageFont.load_default()

    def before_step(self) -> None:
        pass

    def action_name(self, agent: int, action: int) -> str:
        if action < self.n_move - 1:
            return f"move{action}"
        if action == self.n_move - 1:
            return "stop"
        return f"shoot e{action - self.n_move}"

    def frame(self, actions: np.ndarray | None) -> np.ndarray:
        battle = self.env._state.state  # the batched SMAX State, row 0 is drawn
        pos = np.asarray(battle.unit_positions[0])
        alive = np.asarray(battle.unit_alive[0])
        health = np.asarray(battle.unit_health[0])
        types = np.asarray(battle.unit_types[0])
        full = np.asarray(self.smax.unit_type_health)[types]
        names = list(self.smax.unit_type_shorthands)
        sx, sy = SIZE / float(self.smax.map_width), SIZE / float(self.smax.map_height)
        img = Image.new("RGB", (SIZE, SIZE), (235, 230, 215))
        draw = ImageDraw.Draw(img)
        for i in range(len(pos)):
            x, y = pos[i, 0] * sx, SIZE - pos[i, 1] * sy  # y up, as in SMAX
            colour = ALLY if i < self.n_allies else ENEMY
            if not alive[i]:
                draw.line([x - 6, y - 6, x + 6, y + 6], fill=DEAD, width=3)
                draw.line([x - 6, y + 6, x + 6, y - 6], fill=DEAD, width=3)
                continue
            r = 10
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline="black")
            label = names[int(types[i])] + str(i if i < self.n_allies else i - self.n_allies)
            draw.text((x - 7, y - 6), label, fill="white", font=self.font)
            frac = float(np.clip(health[i] / max(full[i], 1e-6), 0.0, 1.0))
            draw.rectangle([x - r, y - r - 7, x + r, y - r - 3], fill=(90, 90, 90))
            draw.rectangle([x - r, y - r - 7, x - r + 2 * r * frac, y - r - 3], fill=(60, 190, 60))
        return np.asarray(img)
