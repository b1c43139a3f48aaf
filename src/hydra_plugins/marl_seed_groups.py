"""Hydra finds sweepers only under the ``hydra_plugins`` namespace; the sweeper is in marl.seed_groups."""

from marl.seed_groups import SeedGroupSweeper as _SeedGroupSweeper


class SeedGroupSweeper(_SeedGroupSweeper):
    """See :mod:`marl.seed_groups`."""
