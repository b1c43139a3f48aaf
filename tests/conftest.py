"""Shared fixtures. Each helper's fixtures live in their own conftest_<topic>.py, imported here."""

from conftest_report import sweep_two_step  # noqa: F401  (the shared two-step sweep, W&B offline)


def pytest_sessionstart(session):
    """Build the fused CPU GRU once, before any test: the runs that tests start in subprocesses
    and SLURM jobs then load it from the cache instead of each compiling it (~30 s) against
    their own deadlines. A failed build is not hidden: tests/test_gru_sequence.py calls it."""
    from marl.agents import gru_sequence

    gru_sequence.available()
