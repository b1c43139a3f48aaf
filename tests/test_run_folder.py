"""``marl.run_folder``: one reading of a run folder for the viewer, the report and the sweep summary.

The viewer (``marl.watch``) and the report (``marl.report``) read the same sweeps; these tests feed
both the same folders and require the same job counts, on the case that split them before (a
finished sweep relaunched with a larger ``t_max``, before its runs resume) and on a sweep with
finished, failed, running, stopped and missing runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from marl import run_folder
from marl.callbacks import failed_runs, run_counts
from marl.report.runs import find_runs, n_agents
from marl.watch.state import Watcher

ROOT = Path(__file__).resolve().parents[1]


def viewer_counts(sweep: Path) -> Counter:
    """Jobs by what the viewer shows; running, stalled and preempted are all "unfinished" to the report."""
    (state,) = Watcher([sweep]).scan()
    return Counter({"preempted": "unfinished", "running": "unfinished", "stalled": "unfinished",
                    "queued": "missing"}.get(r.status, r.status) for r in state.runs)


def report_counts(sweep: Path) -> Counter:
    runs, missing = find_runs([sweep])
    return Counter(["finished" if r.complete else "failed" if r.failed else "unfinished" for r in runs]
                   + ["missing"] * len(missing))


@pytest.fixture(scope="module")
def paper_sweep(tmp_path_factory) -> Path:
    """Two seeds of ``preset=two_step_paper`` with ``t_max=200`` (episodes), launched and finished."""
    sweep = tmp_path_factory.mktemp("sweeps") / "paper"
    done = subprocess.run([sys.executable, str(ROOT / "launch.py"), "-m", "preset=two_step_paper", "seed=0,1",
                           "t_max=200", "logger.wandb.mode=disabled", "logger.console=false",
                           f"hydra.sweep.dir={sweep}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MARL_LIVE_VIEW": "0"})
    assert done.returncode == 0, done.stderr[-3000:]
    return sweep


def relaunched(sweep: Path, into: Path, task: list[str]) -> Path:
    """``sweep`` as its relaunch leaves it before a run resumes: its multirun.yaml lists ``task``."""
    shutil.copytree(sweep, into)
    cfg = OmegaConf.load(into / run_folder.MULTIRUN_FILE)
    cfg.hydra.overrides.task = task
    OmegaConf.save(cfg, into / run_folder.MULTIRUN_FILE)
    return into


def test_a_sweep_relaunched_with_a_larger_t_max_counts_the_same_in_the_viewer_and_the_report(paper_sweep, tmp_path):
    task = [str(o) for o in OmegaConf.load(paper_sweep / run_folder.MULTIRUN_FILE).hydra.overrides.task]
    assert "t_max=200" in task
    sweep = relaunched(paper_sweep, tmp_path / "sweep", [("t_max=400" if o == "t_max=200" else o) for o in task])
    assert viewer_counts(sweep) == report_counts(sweep) == Counter(finished=2)  # not 4 runs, 2 of them queued
    (state,) = Watcher([sweep]).scan()
    assert len({r.name for r in state.runs}) == 2
    assert run_counts(sweep)[0] == "2 run(s): 2 finished, 0 failed"


def test_finished_failed_running_stopped_and_missing_runs_count_the_same(paper_sweep, tmp_path):
    task = [str(o) for o in OmegaConf.load(paper_sweep / run_folder.MULTIRUN_FILE).hydra.overrides.task]
    sweep = relaunched(paper_sweep, tmp_path / "sweep", [("seed=0,1,2,3,4,5" if o == "seed=0,1" else o)
                                                         for o in task])
    finished = next(sweep.glob("*_seed=0"))

    def job(seed: int) -> Path:  # a folder for job ``seed``, made from a finished one
        folder = sweep / f"{seed}_seed={seed}"
        shutil.copytree(finished, folder)
        overrides = [("seed=" + str(seed) if o.startswith("seed=") else o)
                     for o in OmegaConf.load(folder / run_folder.OVERRIDES_FILE)]
        OmegaConf.save(OmegaConf.create(overrides), folder / run_folder.OVERRIDES_FILE)
        lines = (folder / run_folder.METRICS_FILE).read_text().splitlines()
        (folder / run_folder.METRICS_FILE).write_text("\n".join(l for l in lines if '"final"' not in l) + "\n")
        return folder

    failed = job(2)
    with open(failed / run_folder.METRICS_FILE, "a") as f:
        f.write(json.dumps({"env_steps": 50, "status": "failed", "reason": "NonFiniteError: diverged"}) + "\n")
    running = job(3)
    (job(5) / run_folder.CHECKPOINT_FILE).write_bytes(b"a checkpoint")  # stopped (preempted): unfinished
    (running / run_folder.CHECKPOINT_FILE).unlink(missing_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; from marl.runlock import RunLock; "
                               f"lock = RunLock({str(running)!r}); print('held', flush=True); time.sleep(120)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        expected = Counter(finished=2, failed=1, unfinished=2, missing=1)  # seed 4 has no folder
        assert viewer_counts(sweep) == report_counts(sweep) == expected
        (state,) = Watcher([sweep]).scan()
        assert Counter(r.status for r in state.runs) == Counter(finished=2, failed=1, running=1, preempted=1,
                                                                queued=1)
        counts, _ = run_counts(sweep)
        assert counts == "6 run(s): 2 finished, 1 failed, 1 preempted, 1 running, 1 queued"
        assert [(p.name, reason) for p, reason in failed_runs(sweep)] == [("2_seed=2", "NonFiniteError: diverged")]
    finally:
        holder.kill()
        holder.wait()


def test_status_is_one_rule(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / run_folder.CONFIG_FILE).write_text("seed: 0\n")
    metrics = run_dir / run_folder.METRICS_FILE
    metrics.write_text('{"env_steps": 10}\n{"env_steps": 20, "fin')  # a torn last line
    assert run_folder.read_records(metrics) == [{"env_steps": 10}]
    assert run_folder.status(run_dir).state == run_folder.UNFINISHED
    metrics.write_text('{"env_steps": 10}\n{"env_steps": 20, "final": 1.0}\n')
    assert run_folder.status(run_dir) == run_folder.RunStatus(run_folder.FINISHED)
    assert run_folder.status(run_dir, running=True).state == run_folder.FINISHED  # finished wins over a holder
    (run_dir / run_folder.STATUS_FILE).write_text(json.dumps({"status": "failed", "error": "WriteError",
                                                              "reason": "disk full", "env_steps": 20}))
    assert run_folder.status(run_dir) == run_folder.RunStatus(run_folder.FAILED, "WriteError: disk full", 20)
    run_folder.clear_failure(run_dir)
    metrics.write_text('{"env_steps": 10}\n')
    assert run_folder.status(run_dir, running=True).state == run_folder.RUNNING


def test_the_report_reads_the_number_of_agents_from_the_folder_and_says_when_it_guesses(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = {"env": {"name": "mine", "team_reward": "sum"}}
    with pytest.raises(ValueError, match="its folder has no spec.json"):
        n_agents(config, run_dir)
    run_folder.write_json(run_dir, run_folder.SPEC_FILE, {"n_agents": 5, "obs_dim": 3})
    assert n_agents(config, run_dir) == 5  # an env the config rules do not know
    assert n_agents({"env": {"name": "climbing"}}, tmp_path) == 2  # no spec.json: the config's rule


def test_a_run_writes_its_env_spec_at_start(paper_sweep):
    for run_dir in sorted(paper_sweep.glob("*_seed=*")):
        spec = run_folder.read_spec(run_dir)
        assert spec is not None and spec["n_agents"] == 2 and spec["n_actions"] == 2
