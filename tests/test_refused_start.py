"""A start that is refused writes nothing (docs/architecture.md, "The data path", step 3).

Everything that can refuse a start (the config's values, the folder's lock, the checkpoint's
choice, resume compatibility) runs before the first byte is written, and Hydra's own record of
the job (``.hydra/``) is written by launch.py only once the start is accepted. Each test below
makes a real run folder, refuses a start in it, and compares every file in the folder, byte for
byte, with what it held before.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from marl import checkpoint as ckpt
from marl.errors import ConfigError, RunFolderError
from marl.experiment import Experiment

from helpers import run_config
from test_faults import SHORT, launch, no_traceback

ROOT = Path(__file__).resolve().parents[1]
ARGS = (*SHORT, "checkpoint.interval=200", "eval.interval=200")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (Hydra's record included) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_unchanged(folder: Path, before: dict[str, bytes]) -> None:
    after = snapshot(folder)
    assert sorted(after) == sorted(before), f"files added or removed: {set(after) ^ set(before)}"
    changed = [name for name in before if after[name] != before[name]]
    assert not changed, f"changed by a refused start: {changed}"


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A climbing run of 400 env steps, launched as a user would, with its two checkpoints."""
    run_dir = tmp_path_factory.mktemp("refused") / "made"
    done = launch(run_dir, *ARGS, "t_max=400")
    assert done.returncode == 0, done.stderr
    assert (run_dir / ".hydra" / "overrides.yaml").is_file() and (run_dir / "spec.json").is_file()
    return run_dir


@pytest.fixture
def run_dir(made, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(made, copy)
    return copy


def test_a_different_seed_is_refused_by_a_real_process_and_writes_nothing(run_dir):
    before = snapshot(run_dir)
    assert b'"root": 0' in before["seeds.json"]
    done = launch(run_dir, *ARGS, "t_max=600", "seed=7")
    assert done.returncode == 2, done.stderr
    no_traceback(done.stderr)
    assert "seed=0 in the folder, 7 now" in done.stderr
    assert_unchanged(run_dir, before)  # seeds.json still says root 0; .hydra/ still names seed 0's overrides


def test_a_different_mixer_is_refused_and_writes_nothing(run_dir):
    before = snapshot(run_dir)
    with pytest.raises(ConfigError, match=r"mixer\.name='qmix' in the folder, 'vdn' now"):
        Experiment(run_config(run_dir, *ARGS, "t_max=600", "mixer=vdn"))
    assert_unchanged(run_dir, before)


def test_a_folder_locked_by_another_process_is_refused_and_writes_nothing(run_dir):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from marl.runlock import RunLock; "
                               f"lock = RunLock({str(run_dir)!r}); print('held', flush=True); time.sleep(120)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = snapshot(run_dir)
        assert f'"pid": {holder.pid}'.encode() in before["run.lock"]
        done = launch(run_dir, *ARGS, "t_max=600")
        assert done.returncode == 2, done.stderr
        no_traceback(done.stderr)
        assert f"is in use by another process (pid {holder.pid} on host" in done.stderr
        assert_unchanged(run_dir, before)
    finally:
        holder.kill()
        holder.wait()


def test_an_unreadable_checkpoint_is_refused_and_writes_nothing(run_dir):
    """Without a readable predecessor an unreadable checkpoint refuses the start (with a readable one
    the run resumes from it: tests/test_faults.py::test_a_damaged_checkpoint_falls_back_to_the_previous_one)."""
    (run_dir / ckpt.PREVIOUS_FILE).unlink()
    (run_dir / ckpt.CHECKPOINT_FILE).write_bytes(b"\x00garbage" * 100)
    before = snapshot(run_dir)
    with pytest.raises(RunFolderError, match="is unreadable"):
        Experiment(run_config(run_dir, *ARGS, "t_max=600"))
    assert_unchanged(run_dir, before)


def test_a_refused_start_leaves_the_lock_file_and_the_next_start_resumes(run_dir):
    """The refused process never wrote itself into run.lock; the accepted one does, and resumes."""
    before = snapshot(run_dir)
    with pytest.raises(ConfigError):
        Experiment(run_config(run_dir, *ARGS, "t_max=600", "seed=3"))
    assert_unchanged(run_dir, before)
    experiment = Experiment(run_config(run_dir, *ARGS, "t_max=600"))
    try:
        assert (run_dir / "run.lock").read_bytes() != before["run.lock"]  # announced once accepted
        assert experiment.clock.env_steps == 400
    finally:
        experiment.close()



def test_a_refused_start_in_a_new_folder_still_names_its_job(tmp_path):
    """A new folder has nothing to keep: Hydra's record is written at once, so the report (and the
    viewer) list the job as failed before training rather than lose it."""
    from marl.report.runs import find_runs

    run_dir = tmp_path / "new"
    done = launch(run_dir, *ARGS, "t_max=600", "learner.lr=-1")
    assert done.returncode == 2, done.stderr
    assert "Config error: learner.lr" in done.stderr
    assert (run_dir / ".hydra" / "overrides.yaml").is_file() and not (run_dir / "config.yaml").exists()
    (run,), missing = find_runs([run_dir])
    assert run.problem.startswith("failed before training started") and not missing
