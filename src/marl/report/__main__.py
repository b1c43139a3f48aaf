"""``python -m marl.report PATH...``: see :mod:`marl.report.cli`."""

import sys

from marl.report.cli import main

sys.exit(main())
