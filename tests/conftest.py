"""Shared fixtures. Each helper's fixtures live in their own conftest_<topic>.py, imported here."""

from conftest_report import sweep_two_step  # noqa: F401  (the shared two-step sweep, W&B offline)
