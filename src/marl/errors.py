"""Errors that ``launch.py`` reports as one or two clear lines instead of a traceback.

:class:`ConfigError` and :class:`RunFolderError` stop a run before it has touched its folder.
:class:`RunFailed` stops a run that was training: the run folder records it as failed (a
``status`` record in ``metrics.jsonl``, ``status.json``, the traceback in ``error.log``) so that
``marl.report`` lists it as a failure, never as a result.
"""


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the key, the value and what is allowed."""


class RunFolderError(RuntimeError):
    """The run folder cannot be used as it is (held by another process, unreadable checkpoint)."""


class RunFailed(RuntimeError):
    """Training stopped on a fault; the message says what happened and what to do."""


class NonFiniteError(RunFailed):
    """A loss, gradient norm or Q-value became NaN or infinite: the run has diverged."""


class ValueBoundError(RunFailed):
    """A learned value left the range no sound learner leaves (``faults.value_bound=fail``): the run
    has diverged while staying finite (marl.value_guard)."""


class WriteError(RunFailed):
    """A run file (checkpoint, metrics) could not be written, e.g. on a full disk; what was written
    before is intact."""
