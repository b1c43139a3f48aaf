"""``python -m marl.watch``: the status, progress and ETA of every run of a sweep, read from real run
folders in every state (finished, queued, running, stalled, preempted, failed; on SLURM: running
and pending jobs, then cancelled ones), and ``launch.py -m`` showing the live view on a terminal
(a pseudo-terminal) but its plain per-run lines when piped.

The runs are tiny (climbing and two-step games, seconds each); the running one is a real
``launch.py`` in the background with ``t_max=10000000``, stopped with SIGTERM (it then writes a
checkpoint and exits with code 3: the preempted state).
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from marl.watch.slurm import JobState, Queue, array_task_ids
from marl.watch.state import RunState, Watcher, lock_held, sweep_eta
from marl.watch.view import render
from rich.console import Console

from helpers import read_metrics

ROOT = Path(__file__).resolve().parents[1]
CLIMBING = ("env=climbing", "learner.batch_size=8", "logger.wandb.mode=disabled")
TWO_STEP = ("env=two_step", "t_max=300", "eval.interval=100", "logger.interval=100", "learner.batch_size=8",
            "logger.wandb.mode=disabled")
LONG = 10_000_000


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MARL_"))}
    return env


def launch(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=_env())


def background(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_records(metrics: Path, n: int, proc: subprocess.Popen | None, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= n):
        if proc is not None:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else "the run ended"
        assert time.time() < deadline, f"fewer than {n} records in {metrics} after {timeout} s"
        time.sleep(0.2)


def only_sweep(path: Path, now: float | None = None):
    (sweep,) = Watcher([path]).scan(now=now)
    return sweep


def text_of(sweeps) -> str:
    console = Console(width=200, color_system=None, record=True, file=open(os.devnull, "w"))
    console.print(render(sweeps))
    return console.export_text()


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A real two-run local sweep, piped (so: the plain per-run lines), finished."""
    out = tmp_path_factory.mktemp("watch") / "finished"
    res = launch("-m", *CLIMBING, "seed=0,1", "t_max=500", "eval.interval=250", "logger.interval=100",
                 "logger.console=true", f"hydra.sweep.dir={out}")
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


def test_finished_runs_and_a_queued_job(finished_sweep, tmp_path):
    path, _ = finished_sweep
    sweep = only_sweep(path)
    assert [r.status for r in sweep.runs] == ["finished", "finished"]
    assert sweep.ended and sweep.eta_s == 0.0 and sweep.fraction == 1.0
    for run in sweep.runs:
        records = read_metrics(run.path)
        assert run.fraction == 1.0 and run.done == 500 and run.total == 500 and run.eta_s == 0.0
        assert run.eval_return == [r for r in records if "eval/return_mean" in r][-1]["eval/return_mean"]
        assert run.train_return == [r for r in records if "train/return_mean" in r][-1]["train/return_mean"]
        assert run.elapsed_s == records[-1]["time"] > 0

    # The same sweep as if a third job had not started yet: in multirun.yaml, no folder.
    copy = tmp_path / "sweep"
    shutil.copytree(path, copy)
    cfg = OmegaConf.load(copy / "multirun.yaml")
    cfg.hydra.overrides.task = [("seed=0,1,2" if o == "seed=0,1" else o) for o in cfg.hydra.overrides.task]
    OmegaConf.save(cfg, copy / "multirun.yaml")
    sweep = only_sweep(copy)
    assert [r.status for r in sweep.runs] == ["finished", "finished", "queued"]
    queued = sweep.runs[2]
    assert queued.path is None and queued.name == "2_seed=2" and queued.fraction == 0 and queued.eta_s is None
    assert not queued.ended and not sweep.ended
    # Nothing runs: the queued run would take the typical (mean finished) duration once it starts.
    typical = sum(r.elapsed_s for r in sweep.runs[:2]) / 2
    assert sweep.eta_s == pytest.approx(typical)
    assert sweep.fraction == pytest.approx(2 / 3)
    text = text_of([sweep])
    assert "2_seed=2" in text and "queued" in text and "2/3 runs ended: 2 finished, 1 queued" in text


def test_running_then_stalled_then_preempted(tmp_path):
    run_dir = tmp_path / "run"
    proc = background(*CLIMBING, f"t_max={LONG}", "logger.interval=500", "eval.interval=5000",
                      f"checkpoint.interval={LONG}", "logger.console=false", f"hydra.run.dir={run_dir}")
    try:
        wait_for_records(run_dir / "metrics.jsonl", 12, proc)  # past its first evaluation (5000 steps)
        proc.send_signal(signal.SIGSTOP)  # frozen while we compare: no record lands between scan and check
        try:
            now = time.time()
            sweep = only_sweep(run_dir, now=now)
            assert lock_held(run_dir, probe_only=True)  # the flock probe agrees with /proc/locks
            seen, mtime = read_metrics(run_dir), (run_dir / "metrics.jsonl").stat().st_mtime
        finally:
            proc.send_signal(signal.SIGCONT)
        (run,) = sweep.runs
        assert run.status == "running", run
        assert 0 < run.done < LONG and run.fraction == pytest.approx(run.done / LONG)
        assert run.steps_per_sec and run.steps_per_sec > 0
        # The rate: over the last 6 records of this attempt that the scan read.
        assert run.done == seen[-1]["env_steps"]
        (t0, d0), (t1, d1) = (seen[-6]["time"], seen[-6]["env_steps"]), (seen[-1]["time"], seen[-1]["env_steps"])
        assert run.rate == pytest.approx((d1 - d0) / (t1 - t0))
        assert run.last_record_age_s == pytest.approx(now - mtime)
        assert run.eta_s == pytest.approx((LONG - run.done) / run.rate - run.last_record_age_s)
        assert run.eta_s > 60  # ten million steps at a few thousand steps/s
        assert run.train_return is not None and run.eval_return is not None
        assert sweep.eta_s == pytest.approx(run.eta_s) and not sweep.ended

        # The same live run, seen as if an hour had passed without a record.
        (stalled,) = only_sweep(run_dir, now=now + 3600).runs
        assert stalled.status == "stalled" and "no new record for 60 min" in stalled.reason
        assert stalled.eta_s is None and not stalled.ended

        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, err[-3000:]
    assert (run_dir / "checkpoint.pt").is_file()
    sweep = only_sweep(run_dir)
    (run,) = sweep.runs
    last = read_metrics(run_dir)[-1]
    assert run.status == "preempted", run
    assert run.done == last["env_steps"] and run.fraction == pytest.approx(last["env_steps"] / LONG)
    assert f"checkpoint at {last['env_steps']} env_steps" in run.reason and "start it again" in run.reason
    assert run.eta_s is None and run.ended and not run.will_resume  # locally nothing requeues it
    assert sweep.ended
    # The probe never leaves the lock taken: the folder can be locked right after.
    assert not lock_held(run_dir, probe_only=True)
    with open(run_dir / "run.lock") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def test_failed_run_shows_its_reason(tmp_path):
    run_dir = tmp_path / "diverged"
    res = launch(*CLIMBING, "learner.lr=10000", "learner.grad_clip=1e9", "logger.console=false",
                 f"hydra.run.dir={run_dir}")
    assert res.returncode == 1, res.stderr[-3000:]
    sweep = only_sweep(run_dir)
    (run,) = sweep.runs
    assert run.status == "failed" and run.ended and run.eta_s is None
    assert run.reason.startswith("NonFiniteError: training diverged at env_steps=")
    assert 0 < run.done < 50000 and run.fraction == pytest.approx(run.done / 50000)
    assert sweep.ended and sweep.eta_s == 0.0
    text = text_of([sweep])
    assert "failed" in text and "NonFiniteError: training diverged" in text


def test_sweep_eta_fills_free_slots_with_the_waiting_runs():
    def run(status: str, **kw) -> RunState:
        return RunState(name=status, path=None, status=status, **kw)

    finished = [run("finished", elapsed_s=100.0, total=10, done=10), run("finished", elapsed_s=140.0, total=10,
                                                                          done=10)]
    running = [run("running", eta_s=30.0, elapsed_s=90.0, total=10, done=8),
               run("running", eta_s=80.0, elapsed_s=40.0, total=10, done=3)]
    # Two slots: the queued run starts when the first running one ends (30 s), takes 120 s.
    assert sweep_eta(finished + running + [run("queued")]) == pytest.approx(150.0)
    # A preempted run waiting for its requeue takes its remaining part only (at its last rate).
    resumed = run("preempted", will_resume=True, total=100.0, done=50.0, rate=1.0)
    assert sweep_eta(finished + running + [resumed]) == pytest.approx(80.0)
    assert sweep_eta(finished + [run("failed")]) == 0.0
    assert sweep_eta([run("queued"), run("queued")]) is None  # nothing to estimate a duration from


def test_cli_once_prints_the_table(finished_sweep):
    path, _ = finished_sweep
    res = subprocess.run([sys.executable, "-m", "marl.watch", str(path), "--once", "--width", "150"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "0_seed=0" in res.stdout and "1_seed=1" in res.stdout
    assert res.stdout.count("finished") >= 2 and "2/2 runs ended: 2 finished" in res.stdout
    assert "\x1b[" not in res.stdout  # no escape codes in a log


# --- the launcher -------------------------------------------------------------------------------

def run_in_pty(args: list[str], timeout: float = 180) -> tuple[int, str]:
    """``launch.py args`` with stdin/stdout/stderr on a 160x50 pseudo-terminal; its exit code and output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    env = {**_env(), "TERM": "xterm-256color"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, env=env, stdin=slave,
                            stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.time() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every process holding the terminal has closed it
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
            assert time.time() < deadline, "launch.py did not end"
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return rc, b"".join(chunks).decode("utf-8", errors="replace")


def test_launcher_on_a_terminal_shows_the_live_view(tmp_path):
    sweep = tmp_path / "tty"
    rc, out = run_in_pty(["-m", *TWO_STEP, "mixer=qmix,vdn", f"hydra.sweep.dir={sweep}"])
    assert rc == 0, out[-3000:]
    assert "2/2 runs ended: 2 finished" in out, out[-3000:]  # the view's sweep bar, last frame
    assert "0_mixer=qmix" in out and "1_mixer=vdn" in out and "\x1b[" in out  # drawn, with escape codes
    assert "[two_step qmix seed=0]" not in out and "[two_step vdn seed=0]" not in out, out[-3000:]
    assert f"Sweep folder: {sweep}" in out and "2 run(s): 2 finished, 0 failed" in out
    # The per-run lines went to each run's own log file instead.
    for name, label in (("0_mixer=qmix", "qmix"), ("1_mixer=vdn", "vdn")):
        log = (sweep / name / "console.log").read_text()
        assert f"[two_step {label} seed=0] 300/300 env_steps (100%)" in log, log


def test_piped_launcher_keeps_the_plain_lines(finished_sweep):
    path, res = finished_sweep
    assert "[climbing qmix seed=0] 500/500 env_steps (100%)" in res.stderr
    assert "[climbing qmix seed=1] 500/500 env_steps (100%)" in res.stderr
    assert "runs ended" not in res.stdout + res.stderr and "\x1b[" not in res.stdout + res.stderr
    assert not list(path.glob("*/console.log"))
    assert f"Sweep folder: {path}" in res.stdout and "2 run(s): 2 finished, 0 failed" in res.stdout


def test_live_view_only_for_a_local_sweep_on_a_terminal(monkeypatch, tmp_path):
    from marl import callbacks

    local = OmegaConf.create({"hydra": {"launcher": {"_target_": "hydra_plugins.hydra_joblib_launcher."
                                                                  "joblib_launcher.JoblibLauncher"}}})
    slurm = OmegaConf.create({"hydra": {"launcher": {"_target_": "hydra_plugins.hydra_submitit_launcher."
                                                                  "submitit_launcher.SlurmLauncher"}}})
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.delenv(callbacks.LIVE_VIEW_ENV, raising=False)
    assert callbacks.live_view_wanted(local) and not callbacks.live_view_wanted(slurm)
    monkeypatch.setenv(callbacks.LIVE_VIEW_ENV, "0")
    assert not callbacks.live_view_wanted(local)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    monkeypatch.delenv(callbacks.LIVE_VIEW_ENV)
    assert not callbacks.live_view_wanted(local)
    # A job prints into its console.log only while the sweep's view owns the terminal.
    monkeypatch.setenv(callbacks.JOB_CONSOLE_ENV, "1")
    with callbacks.job_console(tmp_path):
        print("to the log")
        print("also to the log", file=sys.stderr)
    assert (tmp_path / "console.log").read_text() == "to the log\nalso to the log\n"


# --- SLURM --------------------------------------------------------------------------------------

def _sinfo() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and bool(out.stdout.strip())


def test_slurm_running_pending_then_cancelled(tmp_path):
    """One task of the array runs, the other waits (array_parallelism=1); then the array is cancelled."""
    if not _sinfo():
        if os.environ.get("MARL_REQUIRE_SLURM") == "1":
            pytest.fail("no SLURM cluster answers `sinfo`; MARL_REQUIRE_SLURM=1 requires it")
        pytest.skip("no SLURM cluster answers `sinfo` (start one with: sudo scripts/slurm-up.sh)")
    name = f"marl-test-{uuid.uuid4().hex[:8]}"
    sweep_dir = tmp_path / "slurm"
    proc = background("-m", "hydra/launcher=slurm", f"hydra.launcher.name={name}",
                      "hydra.launcher.array_parallelism=1", *CLIMBING, "seed=0,1", f"t_max={LONG}",
                      "logger.interval=500", f"checkpoint.interval={LONG}", "logger.console=false",
                      f"hydra.sweep.dir={sweep_dir}")
    array = None
    try:
        deadline = time.time() + 120
        while not list(sweep_dir.glob("*/metrics.jsonl")) or not any(
                m.stat().st_size > 0 for m in sweep_dir.glob("*/metrics.jsonl")):
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, "the SLURM job did not start training within 120 s"
            time.sleep(0.5)
        wait_for_records(next(sweep_dir.glob("*/metrics.jsonl")), 3, proc)
        sweep = only_sweep(sweep_dir)
        assert sweep.slurm
        first, second = sweep.runs
        array = first.job_id.split("_")[0]
        assert first.status == "running" and first.job_id == f"{array}_0" and first.done > 0, first
        assert second.status == "queued" and second.path is None and second.job_id == f"{array}_1", second
        assert "PENDING" in second.reason, second
        # The pending run starts when the running one ends and takes as long as it (its estimated total).
        typical = first.elapsed_s + first.last_record_age_s + first.eta_s
        assert first.eta_s is not None and sweep.eta_s == pytest.approx(first.eta_s + typical)
        text = text_of([sweep])
        assert f"[{array}_0]" in text and f"[{array}_1]" in text

        subprocess.run(["scancel", array], check=True, timeout=30)
        deadline = time.time() + 90
        while True:  # SIGTERM is ignored by submitit's job; SLURM kills it after KillWait
            sweep = only_sweep(sweep_dir)
            if sweep.ended or time.time() > deadline:
                break
            time.sleep(1)
    finally:
        if array is not None:
            subprocess.run(["scancel", array], timeout=30)
        proc.kill()
        proc.wait(timeout=30)
    first, second = sweep.runs
    assert sweep.ended, sweep.runs
    assert first.status == "failed" and "CANCELLED" in first.reason, first
    assert second.status == "failed" and "CANCELLED" in second.reason and "before it made its folder" in second.reason


def test_sacct_array_range_rows_stand_for_their_tasks(monkeypatch):
    """A pending array task that was cancelled has no sacct row of its own, only the array's range row
    (as seen on this project's cluster: ``9_0|CANCELLED by 0`` and ``9_[0-1%1]|CANCELLED by 0``)."""
    assert array_task_ids("9_[0-1%1]") == ["9_0", "9_1"]
    assert array_task_ids("12_[1-3,5%2]") == ["12_1", "12_2", "12_3", "12_5"]
    assert array_task_ids("12_[4]") == ["12_4"] and array_task_ids("9_0") == ["9_0"] and array_task_ids("8") == ["8"]
    queue = Queue()
    answers = {"squeue": [], "sacct": [["9_0", "CANCELLED by 0", "0:0"], ["9_[0-1%1]", "CANCELLED by 0", "0:0"]]}
    monkeypatch.setattr(queue, "_run", lambda cmd: answers[cmd[0]])
    states = queue.states(["9_0", "9_1"], now=0.0)
    assert states["9_0"].state == states["9_1"].state == "CANCELLED" and not states["9_1"].active


def test_job_state_words():
    assert JobState("1_0", "PENDING", "JobArrayTaskLimit").describe() == "PENDING (JobArrayTaskLimit)"
    assert JobState("1_0", "PENDING").active and not JobState("1_0", "PENDING").running
    assert JobState("1_0", "RUNNING").running and not JobState("1_0", "CANCELLED").active
    assert JobState("1_0", "COMPLETED", "0:0").describe() == "COMPLETED"


def test_counts_are_abbreviated_by_their_magnitude():
    from marl.watch.view import fmt_count

    assert [fmt_count(v) for v in (9999, 13000, 140000, 2_050_000, 3e9)] == ["9999", "13k", "140k", "2.05M", "3G"]
