"""EPyMARL's own QMIX runs beside ``marl``'s ``preset=epymarl`` runs: greedy return, Q_tot, grad norm.

    python scripts/epymarl_side_by_side_table.py --epymarl /work/epymarl \
        --marl mpe=results/epymarl/mpe --marl lbf=results/epymarl/lbf

Issue 25's second level ("same protocol, curves"). ``scripts/epymarl-side-by-side.sh`` runs EPyMARL and
then calls this; it can also be run alone on whatever runs exist.

What is read, and how the two are made comparable:

- EPyMARL (sacred's ``FileStorageObserver`` under ``<checkout>/results/sacred/qmix/<env key>/<id>/``):
  ``config.json`` says which task and seed, ``run.json`` the status and wall time, ``info.json`` the
  logged series with their env steps (``<key>_T``). For each (task, seed) the newest COMPLETED run
  with ``t_max >= 300000`` is used.
- EPyMARL tests when ``t_env - last_test_T >= test_interval`` (after the first episode, then every
  50k of the gymma config), and the learner logs every 10k (``learner_log_interval``) from one batch,
  so its records sit at env steps a little past each 50k (25 or so on MPE, up to an episode more per
  test on LBF): the value shown "at" step s is the first record at or after s (within 10k), else the
  last one before s (within 10k), and the step it comes from is printed beside it.
- EPyMARL's ``q_taken_mean`` is ``(chosen_action_qvals * mask).sum() / (mask_elems * n_agents)``
  (``src/learners/q_learner.py``): Q_tot divided by the number of agents. It is multiplied back by
  ``n_agents`` here so that it reads as ``marl``'s ``q_taken_mean``, which is Q_tot.
- ``marl``: the run folders' ``metrics.jsonl`` (the record at exactly step s, as
  ``scripts/metric_at.py`` reads them). ``marl``'s ``q_taken_mean`` and ``grad_norm`` are the means
  over the updates of the logging window; EPyMARL's are one update's value: expect more scatter on
  EPyMARL's side.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

STEPS = (50_000, 100_000, 150_000, 200_000, 250_000, 300_000)
# EPyMARL's env keys of the two tasks, and the number of agents that divides its q_taken_mean.
TASKS = {
    "mpe": ("pz-mpe-simple-spread-v3", 3),
    "lbf": ("lbforaging:Foraging-8x8-2p-2f-coop-v3", 2),
}


def _num(v: Any) -> float:
    """Sacred stores numpy scalars as ``{"py/object": "numpy.float64", "value": x}``."""
    return float(v["value"]) if isinstance(v, dict) else float(v)


def epymarl_runs(checkout: Path) -> dict[tuple[str, int], Path]:
    """The run folder of EPyMARL's QMIX per (task name, seed) with t_max >= 300k: the newest
    COMPLETED one, else the newest RUNNING one (its table rows then end where it has got to)."""
    root = checkout / "results" / "sacred" / "qmix"
    found: dict[tuple[str, int], tuple[tuple[bool, str], Path]] = {}
    for cfg_path in root.glob("*/*/config.json"):
        run_dir = cfg_path.parent
        try:
            cfg = json.loads(cfg_path.read_text())
            run = json.loads((run_dir / "run.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if run.get("status") not in ("COMPLETED", "RUNNING") or cfg.get("t_max", 0) < 300_000:
            continue
        rank = (run["status"] == "COMPLETED", run["start_time"])
        for task, (key, _) in TASKS.items():
            if cfg["env_args"]["key"] == key:
                k = (task, int(cfg["seed"]))
                if k not in found or rank > found[k][0]:
                    found[k] = (rank, run_dir)
    return {k: v[1] for k, v in found.items()}


def wall_time(run_dir: Path) -> str:
    """Wall time of an EPyMARL run from sacred's ``run.json`` (``12.3 min``); for a run still going,
    the time so far (to its last heartbeat) and how far it has got."""
    run = json.loads((run_dir / "run.json").read_text())
    fmt = "%Y-%m-%dT%H:%M:%S.%f"
    start = datetime.strptime(run["start_time"], fmt)
    if run["status"] == "COMPLETED":
        stop = datetime.strptime(run["stop_time"], fmt)
        return f"{(stop - start).total_seconds() / 60:.1f} min"
    beat = datetime.strptime(run["heartbeat"], fmt)
    info = json.loads((run_dir / "info.json").read_text())
    reached = max(info.get("q_taken_mean_T", [0]) + info.get("test_return_mean_T", [0]))
    return f"still running: {(beat - start).total_seconds() / 60:.1f} min so far, logged up to env step {reached}"


def epymarl_at(info: dict[str, Any], key: str, step: int, scale: float = 1.0) -> str:
    """The first record of ``key`` at or after ``step`` (within 10k), with its env step; failing
    that, the last one before it (within 10k): the learner's last log before ``t_max`` can fall
    just short of 300k (LBF: 291600, then the run ends at 301000 before the next)."""
    records = list(zip(info.get(f"{key}_T", []), info.get(key, [])))
    for t, v in records:
        if step <= t < step + 10_000:
            return f"{_num(v) * scale:.3g} @{t}"
    before = [(t, v) for t, v in records if step - 10_000 < t < step]
    if before:
        t, v = before[-1]
        return f"{_num(v) * scale:.3g} @{t}"
    return "-"


def marl_at(run_dir: Path, key: str, step: int) -> str:
    """``key`` in the record of ``run_dir``'s ``metrics.jsonl`` at exactly ``step``."""
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if r.get("env_steps") == step and key in r:
                return f"{float(r[key]):.3g}"
    return "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epymarl", type=Path, required=True, help="the EPyMARL checkout the runs were made in")
    parser.add_argument(
        "--marl", action="append", default=[], metavar="TASK=DIR",
        help="marl's sweep folder of a task (mpe or lbf); its qmix run folders are read",
    )
    args = parser.parse_args()
    if not (args.epymarl / "src" / "main.py").is_file():
        raise SystemExit(f"no EPyMARL checkout at {args.epymarl} (expected {args.epymarl}/src/main.py)")
    marl_dirs = dict(m.split("=", 1) for m in args.marl)
    ep = epymarl_runs(args.epymarl)

    metrics = (
        ("greedy return", "test_return_mean", "eval/return_mean", False),
        ("Q_tot", "q_taken_mean", "q_taken_mean", True),
        ("grad norm", "grad_norm", "grad_norm", False),
    )
    header = "| task | seed | framework | metric | " + " | ".join(f"{s // 1000}k" for s in STEPS) + " |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    walls = []
    for task, (key, n_agents) in TASKS.items():
        seeds = sorted({s for (t, s) in ep if t == task})
        marl_root = Path(marl_dirs[task]) if task in marl_dirs else None
        if marl_root is not None:
            seeds = sorted(set(seeds) | {
                int(p.name.split("seed=")[1]) for p in marl_root.glob("*mixer=qmix,seed=*")
            })
        for seed in seeds:
            if (task, seed) in ep:
                run_dir = ep[(task, seed)]
                info = json.loads((run_dir / "info.json").read_text())
                walls.append(f"EPyMARL {task} seed {seed}: {wall_time(run_dir)} ({run_dir})")
                for name, ekey, _, per_agent in metrics:
                    scale = float(n_agents) if per_agent else 1.0
                    cells = [epymarl_at(info, ekey, s, scale) for s in STEPS]
                    print(f"| {task} | {seed} | EPyMARL | {name} | " + " | ".join(cells) + " |")
            if marl_root is not None:
                for run_dir in sorted(marl_root.glob(f"*mixer=qmix,seed={seed}")):
                    if not (run_dir / "metrics.jsonl").is_file():
                        continue
                    for name, _, mkey, _ in metrics:
                        cells = [marl_at(run_dir, mkey, s) for s in STEPS]
                        print(f"| {task} | {seed} | marl | {name} | " + " | ".join(cells) + " |")
    print()
    print("EPyMARL's Q_tot is its logged q_taken_mean times the number of agents (3 on MPE, 2 on LBF).")
    print("EPyMARL's MPE returns leave out the 25th step's reward (pettingzoo 1.24.3; "
          "scripts/epymarl_mpe_last_reward.py): they read higher than marl's for the same policy.")
    for w in walls:
        print(w)


if __name__ == "__main__":
    main()
