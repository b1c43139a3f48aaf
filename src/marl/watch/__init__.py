"""See a sweep while it runs: ``python -m marl.watch SWEEP_DIR [--once]``.

One live terminal view of every run of a sweep (local or SLURM): a progress bar per run (steps
toward ``t_max``, steps/s, ETA, latest train and eval return), its status (queued, running,
stalled, preempted, finished, failed with its reason) and a sweep bar with the sweep's ETA. It
reads only the run folders (and squeue/sacct for a SLURM sweep), so it works from any terminal,
for a sweep started elsewhere, and after the launching process is gone.

* :mod:`~marl.watch.state`: the run folders read back into :class:`RunState` / :class:`SweepState`
  (status rules in its docstring);
* :mod:`~marl.watch.slurm`: SLURM job ids of a sweep's jobs and their squeue/sacct states;
* :mod:`~marl.watch.view`: the rich view, its :func:`~marl.watch.view.watch` loop and the launcher's
  :class:`~marl.watch.view.BackgroundView`;
* :mod:`~marl.watch.cli`: the command line (``__main__`` runs it).
"""

from marl.watch.state import RunState, SweepState, Watcher, sweep_eta

__all__ = ["RunState", "SweepState", "Watcher", "sweep_eta"]
