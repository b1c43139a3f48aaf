"""A flag the training loop polls once per iteration to stop cleanly at a consistent point.

Signal handlers only set the flag; the loop then writes a checkpoint and raises
:class:`Preempted`, so no state is ever saved halfway through a step. :func:`preemptible` wires
the signals around one run (``launch.py`` uses it):

* In a submitit job (``hydra/launcher=slurm``), SLURM's timeout/preemption signal (USR2, see
  ``signal_delay_s``) sets the flag instead of running submitit's handler at once. After the
  checkpoint is written, submitit's own handler runs: it re-pickles the job, counts a timeout
  against ``max_num_timeout`` when the time limit is near, runs ``scontrol requeue`` and exits.
  The requeued job starts in the same run folder and resumes from the checkpoint
  (:mod:`marl.slurm`).
* Anywhere else (a local run, a hand-written sbatch script), USR2 and SIGTERM set the flag; the
  run stops with a checkpoint and ``Preempted`` reaches the caller, which may start it again in
  the same folder (or with ``resume=<folder>``) to continue.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

_requested = threading.Event()
_signal: list[int] = []  # the signal that asked for the stop, for the message


class Preempted(Exception):
    """Raised by the training loop after it saved a checkpoint because a stop was requested."""


def request(signum: int | None = None) -> None:
    """Ask the training loop to checkpoint and stop at the end of its current iteration."""
    if signum is not None and not _signal:
        _signal.append(signum)
    _requested.set()


def requested() -> bool:
    return _requested.is_set()


def clear() -> None:
    _requested.clear()
    _signal.clear()


def requested_by() -> str | None:
    """The name of the signal that requested the stop, if a signal did."""
    return signal.Signals(_signal[0]).name if _signal else None


def _flag_handler(signum: int, frame: FrameType | None) -> None:
    request(signum)


@contextmanager
def preemptible() -> Iterator[None]:
    """Run the block with stop signals turned into :func:`request`; see the module docstring.

    Outside the main thread (where Python cannot install handlers) the block runs unchanged.
    Handlers that were installed before are put back when the block ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from marl import slurm

    clear()
    requeue = slurm.submitit_requeue_handler()
    signals = [requeue.signum] if requeue else [signal.SIGUSR2, signal.SIGTERM]
    previous: dict[int, Any] = {s: signal.signal(s, _flag_handler) for s in signals}
    try:
        yield
    except Preempted:
        for s, handler in previous.items():
            signal.signal(s, handler)
        previous = {}
        if requeue is not None:
            requeue()  # checkpoints the submitit job, requeues it and exits the process
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
