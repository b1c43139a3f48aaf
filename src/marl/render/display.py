"""A display for the renderers that draw through an X server (pyglet: LBF, RWARE, VMAS).

On a machine without one (a compute node, CI, ``ssh``), the first such render starts a virtual
framebuffer, ``Xvfb -displayfd``, which picks a free display number itself, and points
``DISPLAY`` at it for the rest of the process; the server is stopped when the process exits.
An existing ``DISPLAY`` is used as it is.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess

from marl.render.errors import RenderError

_server: subprocess.Popen | None = None


def ensure_display(env_name: str) -> None:
    """Make sure ``DISPLAY`` names a running X server; start ``Xvfb`` if none is set."""
    global _server
    if os.environ.get("DISPLAY"):
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise RenderError(f"env.name={env_name!r} renders through an X display (pyglet), and this machine has none "
                          "and no Xvfb: install it (apt-get install xvfb) or run under xvfb-run")
    proc = subprocess.Popen([xvfb, "-displayfd", "1", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    number = proc.stdout.readline().strip().decode() if proc.stdout else ""
    if not number.isdigit():
        proc.kill()
        raise RenderError(f"env.name={env_name!r} renders through an X display, and Xvfb ({xvfb}) did not start; "
                          "run under xvfb-run or set DISPLAY")
    _server = proc
    os.environ["DISPLAY"] = f":{number}"
    atexit.register(_stop)


def _stop() -> None:
    if _server is not None and _server.poll() is None:
        _server.terminate()
        try:
            _server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _server.kill()
