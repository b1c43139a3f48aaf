"""Hydra entry point: ``python launch.py [-m] key=value ...``.

``seed=0-9`` is sugar for Hydra's ``seed=range(0,10)``: any ``key=A-B`` with integers A <= B
becomes an inclusive range (Hydra alone would read it as the string "0-9").
"""

from __future__ import annotations

import contextlib
import re
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from marl.registry import import_all_components

PREEMPTED_EXIT_CODE = 3  # stopped on a signal with a checkpoint; rerun to resume
INT_RANGE = re.compile(r"^([\w.+~/@-]*?[\w.]+)=(\d+)-(\d+)$")


def expand_int_ranges(args: list[str]) -> list[str]:
    """Turn ``key=A-B`` into ``key=range(A,B+1)``; leave every other argument as it is."""
    out = []
    for arg in args:
        m = INT_RANGE.match(arg)
        if m and int(m.group(2)) <= int(m.group(3)):
            key, a, b = m.group(1), int(m.group(2)), int(m.group(3))
            arg = f"{key}=range({a},{b + 1})"
        out.append(arg)
    return out


SWEEP_VALUE = re.compile(r"^(range|choice|glob|interval)\(|^[^\[\]{}]*,")


def name_runs_by_swept_keys(args: list[str]) -> list[str]:
    """Name sweep subfolders by the swept keys only (``mixer=qmix,seed=3``), not every override.

    Hydra's ``override_dirname`` lists all overrides; the keys given a single value are the same
    for every run, so they go to its ``exclude_keys``.
    """
    if not any(a in ("-m", "--multirun") for a in args):
        return args
    fixed = []
    for arg in args:
        if arg.startswith("-") or "=" not in arg or arg.startswith("hydra"):
            continue
        key, value = arg.split("=", 1)
        if not SWEEP_VALUE.match(value):
            fixed.append(key.lstrip("+~"))
    if not fixed:
        return args
    # Next to the other overrides: argparse refuses overrides on both sides of an option.
    first = next(i for i, a in enumerate(args) if "=" in a and not a.startswith("-"))
    exclude = f"hydra.job.config.override_dirname.exclude_keys=[{','.join(fixed)}]"
    return [*args[:first], exclude, *args[first:]]


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from marl.callbacks import job_console

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    run_dir = Path(cfg.resume or cfg.run_dir)
    # A sweep drawn by the live view (marl.callbacks): this job's lines go to <run_dir>/console.log.
    with job_console(run_dir) if multirun else contextlib.nullcontext():
        return train(cfg, run_dir, multirun)


def save_hydra_record(cfg: DictConfig) -> None:
    """Hydra's record of this job (``.hydra/``) in its output folder. ``hydra.output_subdir: null``
    (conf/config.yaml) stops Hydra writing it before the job runs: a refused start must leave the
    record of the run already in the folder as it was."""
    from hydra.core.hydra_config import HydraConfig

    from marl.run_folder import write_hydra_files

    record = HydraConfig.instance().cfg
    write_hydra_files(Path(record.hydra.runtime.output_dir), cfg, record, record.hydra.overrides.task)


def train(cfg: DictConfig, run_dir: Path, multirun: bool) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from marl import experiment, preemption, run_folder

    record = lambda: save_hydra_record(cfg)  # noqa: E731
    if not (Path(HydraConfig.get().runtime.output_dir) / run_folder.HYDRA_DIR).exists():
        record()  # a new folder: nothing to keep, and the viewer and the report see the job at once
    try:
        with preemption.preemptible():  # USR2/SIGTERM: checkpoint, then stop (or requeue on SLURM)
            if cfg.vector_group:
                result = vector_group(cfg)  # each member writes its own record once its start is accepted
            else:
                result = experiment.run(cfg, on_start=record)  # written once the start is accepted
    except experiment.REFUSALS as exc:  # a bad config, or the folder is someone else's or unreadable: untouched
        experiment.report_refusal(exc)
        sys.exit(2)
    except preemption.Preempted as exc:
        print(f"Run stopped by {preemption.requested_by() or 'a stop request'}: {exc}. Start it again in the "
              f"same folder, or with resume={cfg.resume or cfg.run_dir}, to continue.", file=sys.stderr)
        if not multirun:
            sys.exit(PREEMPTED_EXIT_CODE)
        raise
    except Exception as exc:  # training failed (diverged, disk full, ...) or a bug: one readable message
        experiment.report_failure(cfg, run_dir, exc)
        if multirun:
            return None  # the other runs of the sweep go on; its summary counts the failures
        sys.exit(1)
    return result.get("eval/return_mean")


def vector_group(cfg: DictConfig) -> dict[str, float]:
    """Several seeds in this process (``seeds_per_process``); each member reports its own failure."""
    from marl import vector_experiment

    results = vector_experiment.run_group(cfg)
    return next((r for r in results if isinstance(r, dict)), {})


if __name__ == "__main__":
    import_all_components()
    sys.argv = [sys.argv[0], *name_runs_by_swept_keys(expand_int_ranges(sys.argv[1:]))]
    main()
