"""``python -m marl.watch SWEEP_DIR...``: see :mod:`marl.watch.cli`."""

import sys

from marl.watch.cli import main

sys.exit(main())
