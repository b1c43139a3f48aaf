"""``python -m marl.watch SWEEP_DIR... [--once] [--interval S] [--stall-after S] [--width N]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from marl.watch.state import STALL_AFTER_S
from marl.watch.view import watch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m marl.watch", description=(
        "A live view of the runs of a sweep (a sweep folder, a run folder or any folder above them), read "
        "from the run folders (and squeue/sacct for a SLURM sweep). It exits when every run has ended."))
    p.add_argument("paths", nargs="+", type=Path, metavar="SWEEP_DIR")
    p.add_argument("--once", action="store_true", help="print the table once and exit (for scripts and logs)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    p.add_argument("--stall-after", type=float, default=STALL_AFTER_S,
                   help=f"a live run with no new record for this many seconds is stalled (default {STALL_AFTER_S:g})")
    p.add_argument("--width", type=int, default=None,
                   help="columns of the output (default: the terminal's; 160 when not a terminal)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [str(p) for p in args.paths if not p.is_dir()]
    if missing:
        print(f"not a folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    width = args.width or (None if sys.stdout.isatty() else 160)
    console = Console(width=width)
    try:
        watch(args.paths, once=args.once, interval=args.interval, stall_after=args.stall_after, console=console)
    except KeyboardInterrupt:
        return 130
    return 0
