"""The sweeper of ``launch.py -m``: Hydra's basic sweeper, packing seeds into processes.

With ``seeds_per_process=1`` (the default) it is Hydra's ``BasicSweeper``, unchanged. With
``seeds_per_process=S`` the jobs of the sweep that differ only in ``seed`` are launched S at a
time as one job each (locally one process, on SLURM one submitit job): hydra-submitit-launcher
cannot pack sweep points into one job (Hydra issue 2632), so the grouping happens here, before
any launcher sees the jobs. Each member keeps the run folder, job number and overrides it would
have had on its own; the group's job runs in its first member's folder and reads the list of
members from a file under ``<sweep>/.groups/`` (``vector_group``), and
:mod:`marl.vector_experiment` trains them. A group of one (the seeds left over when their number
is not a multiple of S) is launched as the plain job it would be without the option: a batched
learner of one member gains nothing, and computes each update twice (a lone member's copy,
:class:`marl.vector_learner.VectorLearner`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

GROUPS_DIR = ".groups"


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _quoted(value: str) -> str:
    """A string value for Hydra's override grammar (folder names hold '=' and ',')."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class SeedGroupSweeper(BasicSweeper):
    """``BasicSweeper`` that launches the seeds of one configuration together (see the module)."""

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*self._parse_config(), *arguments])
        jobs = [list(job) for batch in self.split_arguments(overrides, None) for job in batch]
        if int(self._job_config(jobs[0], 0).seeds_per_process) == 1:
            return super().sweep(arguments)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        groups = self.groups(jobs)
        (sweep_dir / GROUPS_DIR).mkdir(exist_ok=True)
        launched = []
        for members in groups:
            first = members[0]
            if len(members) == 1:  # a seed left over by the cut: nothing to batch, so it runs as a plain run
                launched.append([*first["overrides"], f"hydra.sweep.subdir={_quoted(first['subdir'])}"])
                continue
            path = sweep_dir / GROUPS_DIR / f"{first['num']}.json"
            path.write_text(json.dumps({"members": members}, indent=1))
            launched.append([*first["overrides"], f"vector_group={_quoted(str(path))}",
                             f"hydra.sweep.subdir={_quoted(first['subdir'])}"])
        self.validate_batch_is_legal(launched)
        results = self.launcher.launch(launched, initial_job_idx=0)
        for r in results:
            _ = r.return_value  # raises if the group's job failed as a whole
        return [results]

    def _job_config(self, job: Sequence[str], num: int) -> Any:
        assert self.hydra_context is not None and self.config is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
        with open_dict(cfg):
            cfg.hydra.job.num = num
        return cfg

    def groups(self, jobs: list[list[str]]) -> list[list[dict[str, Any]]]:
        """Jobs that differ only in ``seed``, in sweep order, cut into groups of ``seeds_per_process``."""
        by_config: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for num, job in enumerate(jobs):
            cfg = self._job_config(job, num)
            subdir = str(cfg.hydra.sweep.subdir)
            member = {"num": num, "seed": int(cfg.seed), "overrides": job, "subdir": subdir,
                      "run_dir": str((Path(str(cfg.hydra.sweep.dir)) / subdir).resolve()),
                      "size": int(cfg.seeds_per_process)}
            key = tuple(sorted(o for o in job if _key(o) != "seed"))
            by_config.setdefault(key, []).append(member)
        out = []
        for members in by_config.values():
            size = members[0]["size"]
            out += [members[i:i + size] for i in range(0, len(members), size)]
        return sorted(out, key=lambda g: g[0]["num"])
