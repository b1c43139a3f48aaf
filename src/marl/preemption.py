"""A flag the training loop polls once per iteration to stop cleanly at a consistent point.

Signal handlers (SLURM's USR2 through submitit, or SIGTERM) only set the flag; the loop then
writes a checkpoint and raises :class:`Preempted`, so no state is saved halfway through a step.
"""

from __future__ import annotations

import threading

_requested = threading.Event()


class Preempted(Exception):
    """Raised by the training loop after it saved a checkpoint because a stop was requested."""


def request() -> None:
    _requested.set()


def requested() -> bool:
    return _requested.is_set()


def clear() -> None:
    _requested.clear()
