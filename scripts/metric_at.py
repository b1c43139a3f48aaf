"""A metric of each run, read from its ``metrics.jsonl``, at chosen points of training.

    python scripts/metric_at.py results/epymarl/lbf --metric q_taken_mean --at 10000,300000,2050000
    python scripts/metric_at.py results/epymarl/lbf --metric grad_norm --max-until 20000
    python scripts/metric_at.py results/epymarl/lbf --metric eval/return_mean --first-reaching 0.5

One line per run folder (sorted by name): the metric's value in the record at each ``--at`` env step,
its largest value in the records up to ``--max-until`` env steps, and the first env step at which it
reached ``--first-reaching``. ``python -m marl.report`` compares runs at their end; this reads what a
run logged along the way, for figures such as "Q_tot at 10k steps" in docs/results.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from marl.run_folder import METRICS_FILE, read_records


def records(run_dir: Path, metric: str) -> list[tuple[int, float]]:
    """``(env_steps, value)`` of every record of ``run_dir`` that holds ``metric``."""
    return [(int(r["env_steps"]), float(r[metric])) for r in read_records(run_dir / METRICS_FILE) if metric in r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a sweep folder (its run folders are read)")
    parser.add_argument("--metric", required=True)
    parser.add_argument("--at", default="", help="comma-separated env steps")
    parser.add_argument("--max-until", type=int, help="largest value in the records up to this env step")
    parser.add_argument("--first-reaching", type=float, help="first env step with a value at or above this")
    args = parser.parse_args()
    steps = [int(s) for s in args.at.split(",") if s]
    runs = sorted(p.parent for p in args.path.glob(f"*/{METRICS_FILE}"))
    if not runs:
        raise SystemExit(f"no run folder with a metrics.jsonl under {args.path}")
    for run_dir in runs:
        values = records(run_dir, args.metric)
        by_step = dict(values)
        cells = [f"{s}: {by_step[s]:.3g}" if s in by_step else f"{s}: -" for s in steps]
        if args.max_until is not None:
            early = [v for s, v in values if s <= args.max_until]
            cells.append(f"max until {args.max_until}: {max(early):.3g}" if early else f"max until {args.max_until}: -")
        if args.first_reaching is not None:
            first = next((s for s, v in values if v >= args.first_reaching), None)
            cells.append(f"first >= {args.first_reaching:g}: {first if first is not None else 'never'}")
        print(f"{run_dir.name}  " + "  ".join(cells))


if __name__ == "__main__":
    main()
