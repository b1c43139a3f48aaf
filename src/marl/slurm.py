"""Glue between submitit's preemption handling and :mod:`marl.preemption`.

How submitit (1.5) handles SLURM's signal, read from its source: when a job starts,
``submitit.core.submission.process_job`` installs ``SignalHandler.checkpoint_and_try_requeue``
for USR2 (``SUBMITIT_PREEMPT_SIGNAL``). That handler runs *inside* whatever the main thread is
doing, calls the job callable's ``checkpoint`` method (hydra-submitit-launcher's returns a
``DelayedSubmission`` of the same launcher call, i.e. "run this sweep job again"), pickles it
with the remaining timeout count, runs ``scontrol requeue <job>`` and exits.

Run at an arbitrary bytecode, that would requeue without saving the training state. So
:func:`marl.preemption.preemptible` replaces the handler for the duration of the run with one
that only sets the stop flag; the training loop writes the checkpoint at the end of its
iteration and raises ``Preempted``; only then is submitit's original handler called (through
:class:`SubmititRequeue`) to pickle, requeue and exit. Since the requeued job is the same Hydra
job, it gets the same run folder, finds ``checkpoint.pt`` there and resumes.

Timeout vs preemption is submitit's decision: a USR2 after ``min(0.8 * timeout, timeout - 10
min)`` of wall time counts against ``max_num_timeout`` (so with ``timeout_min <= 10`` every
USR2 is a timeout); earlier ones are preemptions and always requeue.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType



@dataclass(frozen=True)
class SubmititRequeue:
    """Submitit's checkpoint-and-requeue handler for ``signum``, to be called after our checkpoint."""

    signum: int
    handler: Callable[[int, FrameType | None], None]

    def __call__(self) -> None:
        name = signal.Signals(self.signum).name
        print(f"{name} received: checkpoint saved; handing over to submitit to requeue this job",
              file=sys.stderr, flush=True)
        self.handler(self.signum, None)  # requeues and exits (or raises if it may not requeue)


def submitit_requeue_handler() -> SubmititRequeue | None:
    """Submitit's installed preemption handler when this process is a submitit job, else None."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    try:
        from submitit.core.job_environment import JobEnvironment, SignalHandler
    except ImportError:
        return None
    signum = JobEnvironment._usr_sig()
    handler = signal.getsignal(signum)
    if getattr(handler, "__func__", None) is not SignalHandler.checkpoint_and_try_requeue:
        return None
    return SubmititRequeue(int(signum), handler)  # type: ignore[arg-type]

