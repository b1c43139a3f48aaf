"""Episodes as pictures: GIF or MP4 files of a trained policy acting, one captioned frame per state.

* :mod:`~marl.render.sources`: where each env's picture comes from (the packages' own renderers,
  :mod:`~marl.render.matrix` for the payoff tables, :mod:`~marl.render.smax` for SMAX battles);
* :mod:`~marl.render.display`: a virtual X display for the pyglet renderers on a headless machine;
* :mod:`~marl.render.overlay`: the caption under each frame (step, team return, actions);
* :mod:`~marl.render.recorder`: playing episodes with the runner and keeping their frames;
* :mod:`~marl.render.video`: writing the frames to ``.gif`` or ``.mp4``;
* :mod:`~marl.render.training`: the opt-in render of one greedy episode during training.

``python -m marl.evaluate RUN --render`` is the command that uses them (:mod:`marl.evaluate`).
"""

from marl.render.errors import RenderError
from marl.render.recorder import Episode, record
from marl.render.video import check_path, write_video

__all__ = ["Episode", "RenderError", "check_path", "record", "write_video"]
