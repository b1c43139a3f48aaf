"""Against a real SLURM cluster (scripts/slurm-up.sh): sweeps through submitit, fast failure on
impossible requests, and a run preempted with USR2 that is requeued and resumes losslessly.

Skipped when no cluster answers ``sinfo``, except with ``MARL_REQUIRE_SLURM=1`` (CI starts the
cluster, so there a missing cluster is a failure, not a skip). About two minutes in all.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest

from marl import checkpoint as ckpt
from marl.experiment import run

from helpers import read_metrics, run_config
from test_resume import assert_same, final_state, records

ROOT = Path(__file__).resolve().parents[1]
QUIET = ("logger.wandb.mode=disabled", "logger.console=true")
# A short climbing run with checkpoints and a target schedule, preempted mid-training by the USR2 tests.
USR2_RUN = ("env=climbing", "num_envs=2", "t_max=4000", "eval.interval=1000", "logger.interval=100",
            "checkpoint.interval=100000", "learner.batch_size=8", "buffer.capacity=20", "eval.episodes=4",
            "eval.num_envs=2", "learner.target_update_interval=10", "epsilon.anneal=2000", "threads=1")


def _sinfo() -> str | None:
    if shutil.which("sinfo") is None:
        return None
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%c %T"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


@pytest.fixture(scope="module")
def node_cpus() -> int:
    """The cluster's CPUs per node; fails (not skips) when MARL_REQUIRE_SLURM=1 and none answers."""
    info = _sinfo()
    if info is None:
        msg = "no SLURM cluster answers `sinfo` (start one with: sudo scripts/slurm-up.sh)"
        if os.environ.get("MARL_REQUIRE_SLURM") == "1":
            pytest.fail(msg + "; MARL_REQUIRE_SLURM=1 requires it")
        pytest.skip(msg)
    return int(info.split()[0])


def launch(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def sacct(name: str, duplicates: bool = False) -> list[tuple[str, str]]:
    """(job id, state) of the jobs named ``name``; with ``duplicates``, also each requeued run."""
    cmd = ["sacct", "-X", "-n", "-P", f"--name={name}", "-S", "now-2hours", "-o", "JobID,State"]
    out = subprocess.run(cmd + (["-D"] if duplicates else []), capture_output=True, text=True, timeout=30)
    return [tuple(line.split("|")[:2]) for line in out.stdout.split()]  # type: ignore[misc]


def wait_for_sacct(name: str, n: int, duplicates: bool = False, timeout: float = 30) -> list[tuple[str, str]]:
    """The job's submitter may return before slurmdbd has recorded the job's end: poll until the
    last ``n`` records of ``name`` are final."""
    deadline = time.time() + timeout
    while True:
        jobs = sacct(name, duplicates)
        if len(jobs) >= n and all(state not in ("PENDING", "RUNNING") for _, state in jobs[-n:]):
            return jobs
        if time.time() > deadline:
            return jobs
        time.sleep(1)


def submitit_results(sweep_dir: Path) -> list[tuple[str, object]]:
    """What submitit recorded for each job: ("success", JobReturn) or ("error", traceback).

    sacct is not enough: a job whose Python raised still shows COMPLETED there."""
    out = []
    for f in sorted((sweep_dir / ".submitit").glob("*/*_result.pkl")):
        with open(f, "rb") as fh:
            out.append(pickle.load(fh))
    return out


def test_sweep_runs_one_slurm_job_per_run(tmp_path, node_cpus):
    name = f"marl-test-{uuid.uuid4().hex[:8]}"
    res = launch("-m", "hydra/launcher=slurm", f"hydra.launcher.name={name}", "env=two_step", "mixer=qmix,vdn",
                 "seed=0-1", "t_max=200", "eval.interval=100", "logger.interval=100", "learner.batch_size=8",
                 *QUIET, f"hydra.sweep.dir={tmp_path}")
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = wait_for_sacct(name, 4)
    assert len(jobs) == 4 and {s for _, s in jobs} == {"COMPLETED"}, jobs
    results = submitit_results(tmp_path)
    assert [r[0] for r in results] == ["success"] * 4, results
    assert all(str(r[1].status) == "JobStatus.COMPLETED" for r in results), results
    runs = sorted(tmp_path.glob("*/metrics.jsonl"))
    assert len(runs) == 4
    seen = set()
    for m in runs:
        last = read_metrics(m.parent)
        assert last[-1].get("final") == 1.0 and last[-1]["env_steps"] == 200, m
        cfg = (m.parent / "config.yaml").read_text()
        seen.add((("name: qmix" in cfg), ("seed: 1" in cfg)))
    assert len(seen) == 4  # qmix/vdn x seed 0/1, one folder each


def test_seeds_per_process_runs_one_slurm_job_per_configuration(tmp_path, node_cpus):
    name = f"marl-test-{uuid.uuid4().hex[:8]}"
    res = launch("-m", "hydra/launcher=slurm", f"hydra.launcher.name={name}", "env=two_step", "mixer=qmix,vdn",
                 "seed=0-1", "seeds_per_process=2", "t_max=200", "eval.interval=100", "logger.interval=100",
                 "learner.batch_size=8", *QUIET, f"hydra.sweep.dir={tmp_path}")
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = wait_for_sacct(name, 2)
    assert len(jobs) == 2 and {s for _, s in jobs} == {"COMPLETED"}, jobs  # 2 jobs for 4 runs
    names = sorted(m.parent.name for m in tmp_path.glob("*/metrics.jsonl"))
    assert names == ["0_mixer=qmix,seed=0", "1_mixer=qmix,seed=1", "2_mixer=vdn,seed=0", "3_mixer=vdn,seed=1"]
    for n in names:
        assert read_metrics(tmp_path / n)[-1].get("final") == 1.0, n


def test_impossible_request_fails_at_submission_with_sbatch_reason(tmp_path, node_cpus):
    name = f"marl-test-{uuid.uuid4().hex[:8]}"
    start = time.time()
    res = launch("-m", "hydra/launcher=slurm", f"hydra.launcher.name={name}",
                 f"hydra.launcher.cpus_per_task={node_cpus + 1}", "env=two_step", "seed=0-1", *QUIET,
                 f"hydra.sweep.dir={tmp_path}", timeout=60)
    assert res.returncode != 0
    assert time.time() - start < 30  # refused, not left pending (EnforcePartLimits=ALL)
    assert "More processors requested than permitted" in res.stderr, res.stderr[-3000:]
    assert sacct(name) == []


def preempt_with_usr2(name: str, overrides: list[str], sweep: Path, started: Callable[[], bool]) -> str:
    """Launch the sweep on SLURM, send its one job USR2 once ``started()``, wait for the sweep to
    end (requeued and finished) and return the jobs' stderr logs."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "-m", "hydra/launcher=slurm",
                             f"hydra.launcher.name={name}", *overrides, *QUIET, f"hydra.sweep.dir={sweep}"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not started():
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, "the SLURM job did not start training within 120 s"
            time.sleep(0.1)
        job = subprocess.run(["squeue", "-h", f"--name={name}", "-o", "%i"], capture_output=True, text=True,
                             timeout=30).stdout.split()
        assert len(job) == 1, job  # one job (with seeds_per_process, one for the whole group)
        subprocess.run(["scancel", "--signal=USR2", job[0]], check=True, timeout=30)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    return "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_log.err"))


def test_usr2_requeues_and_the_run_resumes_bitwise(tmp_path, node_cpus):
    name = f"marl-test-{uuid.uuid4().hex[:8]}"
    overrides = list(USR2_RUN)
    sweep = tmp_path / "sweep"
    # Preempt once the run is training (its first record).
    log = preempt_with_usr2(name, overrides, sweep,
                            lambda: any(m.stat().st_size > 0 for m in sweep.glob("*/metrics.jsonl")))
    (run_dir,) = [m.parent for m in sweep.glob("*/metrics.jsonl")]
    assert "SIGUSR2 received: checkpoint saved" in log, log[-3000:]
    assert "from its checkpoint at env_steps=" in log, log[-3000:]
    resumed_at = int(log.split("from its checkpoint at env_steps=")[1].split(",")[0])
    assert 0 < resumed_at < 4000
    states = [s for _, s in wait_for_sacct(name, 1, duplicates=True)]
    assert states.count("REQUEUED") == 1 and states[-1] == "COMPLETED", states
    assert [r[0] for r in submitit_results(sweep)] == ["success"]

    run(run_config(tmp_path / "ref", *overrides))  # the same run, never interrupted
    assert records(run_dir) == records(tmp_path / "ref")
    assert_same(final_state(run_dir), final_state(tmp_path / "ref"), "final checkpoint")
    assert ckpt.load(run_dir / ckpt.CHECKPOINT_FILE)["clock"]["env_steps"] == 4000


def test_usr2_requeues_a_seed_group_and_every_member_resumes_bitwise(tmp_path, node_cpus):
    """``seeds_per_process=2``: one SLURM job trains both seeds; USR2 checkpoints every member,
    submitit requeues the job, and each member ends bitwise equal to the uninterrupted group."""
    name = f"marl-test-{uuid.uuid4().hex[:8]}"
    overrides = [*USR2_RUN, "seed=0-1", "seeds_per_process=2"]
    members = ["0_seed=0", "1_seed=1"]
    sweep = tmp_path / "sweep"
    log = preempt_with_usr2(name, overrides, sweep, lambda: all(
        (sweep / m / "metrics.jsonl").is_file() and (sweep / m / "metrics.jsonl").stat().st_size for m in members))
    assert "SIGUSR2 received" in log, log[-3000:]
    states = [s for _, s in wait_for_sacct(name, 1, duplicates=True)]
    assert states.count("REQUEUED") == 1 and states[-1] == "COMPLETED", states
    assert [r[0] for r in submitit_results(sweep)] == ["success"]
    resumed = [int(part.split(",")[0]) for part in log.split("from its checkpoint at env_steps=")[1:]]
    assert len(resumed) == 2 and all(0 < s < 4000 for s in resumed), log[-3000:]  # both members resumed

    ref = tmp_path / "ref"  # the same group, never interrupted, in one local process
    done = subprocess.run([sys.executable, str(ROOT / "launch.py"), "-m", *overrides, *QUIET,
                           f"hydra.sweep.dir={ref}", "hydra.launcher.n_jobs=1"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for m in members:
        assert records(sweep / m) == records(ref / m), m
        assert_same(final_state(sweep / m), final_state(ref / m), f"member {m}")
        assert ckpt.load(sweep / m / ckpt.CHECKPOINT_FILE)["clock"]["env_steps"] == 4000
