"""Faults that long sweeps meet, each reproduced for real (docs/architecture.md, invariants 8 and 9).

* divergence: a huge learning rate makes the loss non-finite; the run stops at once with exit
  status 1, a message naming the step and the likely causes, a failed status in the run folder,
  and the last good checkpoint untouched (the climbing game's greedy argmax over NaN would
  otherwise "evaluate" to the optimum, 275);
* two processes on one run folder: the second is refused (or waits, with ``faults.lock_wait_s``)
  and the first's metrics are untouched; a SIGKILLed holder leaves no stale lock;
* damaged checkpoints: truncated or garbage, with and without an older generation; a checkpoint
  that would run code when unpickled is refused;
* a full disk (a small tmpfs, as root): a clear message, no temp file, the previous checkpoint
  and metrics.jsonl intact;
* a W&B server that accepts connections and never answers: the run starts within the configured
  timeout and logs offline in its folder.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from marl import checkpoint as ckpt
from marl.errors import NonFiniteError, RunFolderError
from marl.experiment import Experiment, run
from marl.report.aggregate import compare
from marl.runlock import RunLock

from helpers import read_metrics, run_config

ROOT = Path(__file__).resolve().parents[1]
# A climbing run of a few seconds: 25-step episodes, a batch of 8 after 200 env steps.
SHORT = ("env=climbing", "num_envs=2", "learner.batch_size=8", "buffer.capacity=50", "eval.episodes=4",
         "eval.num_envs=2", "epsilon.anneal=1000", "logger.interval=100")
DIVERGE = ("learner.lr=10000", "learner.grad_clip=1e9")


def command(run_dir: Path, *overrides: str, wandb: str = "disabled") -> list[str]:
    return [sys.executable, str(ROOT / "launch.py"), f"logger.wandb.mode={wandb}", "logger.console=false",
            *overrides, f"hydra.run.dir={run_dir}"]


def launch(run_dir: Path, *overrides: str, wandb: str = "disabled", env: dict[str, str | None] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(run_dir, *overrides, wandb=wandb), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None})


def start(run_dir: Path, *overrides: str, stderr: Path) -> subprocess.Popen[str]:
    """A run in the background, its stderr in a file (readable while it runs)."""
    with open(stderr, "w") as err:
        return subprocess.Popen(command(run_dir, *overrides), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                text=True)


def wait_for(path: Path, proc: subprocess.Popen[str], what: str, stderr: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {what}:\n{stderr.read_text()}"
        assert time.time() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def stop(*procs: subprocess.Popen[str] | None) -> None:
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


def no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr


# --- divergence ------------------------------------------------------------------------------------
def test_a_diverged_run_stops_as_failed_and_keeps_its_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    # The first checkpoint (env step 100) comes before the first update (env step 200).
    done = launch(run_dir, *SHORT, *DIVERGE, "t_max=20000", "checkpoint.interval=100", "eval.interval=100")
    assert done.returncode == 1, done.stderr
    no_traceback(done.stderr)
    err = done.stderr
    assert "Run failed [climbing qmix seed=0]: NonFiniteError: training diverged at env_steps=" in err
    assert "learner.lr=10000" in err and "learner.grad_clip" in err and "error.log" in err
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and status["error"] == "NonFiniteError"
    assert "non-finite loss" in status["reason"] and status["grad_steps"] < 20000
    records = read_metrics(run_dir)
    assert records[-1]["status"] == "failed" and not any("final" in r for r in records)
    failed_at = records[-1]["env_steps"]
    assert all(math.isfinite(r["loss"]) for r in records if "loss" in r)  # nothing logged from a NaN update
    # Untouched: the newest checkpoint is from before the divergence and loads, finite.
    state = ckpt.load(run_dir / ckpt.CHECKPOINT_FILE)
    assert state["clock"]["env_steps"] < failed_at
    assert all(torch.isfinite(p).all() for p in state["learner"]["policy"].values())
    assert "NonFiniteError" in (run_dir / "error.log").read_text()  # the traceback, for debugging
    comparison = compare([run_dir], reps=10, curve_reps=10)  # the report: a failure, never a result
    assert not comparison.tables
    assert [r.path for r in comparison.incomplete] == [run_dir] and comparison.incomplete[0].failed
    assert "failed at" in comparison.incomplete[0].problem and "NonFiniteError" in comparison.incomplete[0].problem


def test_without_the_check_the_same_run_trains_on_with_a_nan_loss(tmp_path):
    """What the check prevents, shown: the same diverging run ends "successfully"."""
    done = launch(tmp_path / "run", *SHORT, *DIVERGE, "t_max=2000", "eval.interval=1000",
                  "faults.check_finite=false")
    assert done.returncode == 0, done.stderr
    records = read_metrics(tmp_path / "run")
    assert any(r.get("loss") != r.get("loss") for r in records if "loss" in r)  # NaN != NaN
    assert records[-1].get("final") == 1.0


def test_non_finite_q_values_while_acting_stop_the_run(tmp_path):
    exp = Experiment(run_config(tmp_path, *SHORT))
    with torch.no_grad():
        next(exp.learner.policy.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="Q-values while acting"):
        exp.runner.step(epsilon=0.0)
    exp.close()


# --- one writer per run folder ---------------------------------------------------------------------
def test_a_second_process_on_a_live_run_folder_is_refused_and_changes_nothing(tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "first.err"
    first = start(run_dir, *SHORT, "t_max=10000000", "checkpoint.interval=200", stderr=log)
    try:
        wait_for(run_dir / ckpt.CHECKPOINT_FILE, first, "a first checkpoint", log)
        metrics_before = (run_dir / "metrics.jsonl").read_bytes()
        second = launch(run_dir, *SHORT, "t_max=10000000", "checkpoint.interval=200", timeout=120)
        assert second.returncode == 2, second.stderr
        no_traceback(second.stderr)
        assert (f"run folder {run_dir} is in use by another process (pid {first.pid} on host "
                f"{socket.gethostname()}") in second.stderr
        assert "faults.lock_wait_s" in second.stderr
        assert first.poll() is None  # the first run goes on
        assert (run_dir / "metrics.jsonl").read_bytes().startswith(metrics_before)  # not truncated
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        stop(first)
    # The kernel released the dead process's lock: the folder resumes at once.
    saved = ckpt.load(run_dir / ckpt.CHECKPOINT_FILE)["clock"]["env_steps"]
    again = launch(run_dir, *SHORT, f"t_max={saved + 200}", "checkpoint.interval=200")
    assert again.returncode == 0, again.stderr
    assert f"from its checkpoint at env_steps={saved}," in again.stderr


def test_lock_wait_takes_over_when_the_holder_stops(tmp_path):
    """A requeued SLURM job whose predecessor is still exiting: wait, then resume its checkpoint."""
    run_dir, log1, log2 = tmp_path / "run", tmp_path / "first.err", tmp_path / "second.err"
    args = (*SHORT, "t_max=10000000", "checkpoint.interval=200")
    first = start(run_dir, *args, stderr=log1)
    second = None
    try:
        wait_for(run_dir / ckpt.CHECKPOINT_FILE, first, "a first checkpoint", log1)
        second = start(run_dir, *args, "faults.lock_wait_s=120", stderr=log2)
        time.sleep(3)
        assert second.poll() is None, log2.read_text()  # waiting, not refused
        assert "Resuming" not in log2.read_text()
        first.send_signal(signal.SIGTERM)  # stops with a checkpoint, releasing the folder
        assert first.wait(timeout=60) == 3, log1.read_text()
        saved = ckpt.load(run_dir / ckpt.CHECKPOINT_FILE)["clock"]["env_steps"]
        deadline = time.time() + 120
        while f"from its checkpoint at env_steps={saved}," not in log2.read_text():
            assert second.poll() is None, log2.read_text()
            assert time.time() < deadline, "the waiting run did not resume"
            time.sleep(0.2)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 3, log2.read_text()
    finally:
        stop(first, second)


def test_the_lock_names_its_holder_in_process(tmp_path):
    held = RunLock(tmp_path)
    with pytest.raises(RunFolderError, match=rf"pid {os.getpid()} on host {socket.gethostname()}"):
        RunLock(tmp_path)
    held.release()
    RunLock(tmp_path).release()  # free again


# --- damaged checkpoints ---------------------------------------------------------------------------
def _two_generations(run_dir: Path) -> None:
    run(run_config(run_dir, *SHORT, "t_max=400", "checkpoint.interval=200", "eval.interval=200"))
    assert (run_dir / ckpt.CHECKPOINT_FILE).exists() and (run_dir / ckpt.PREVIOUS_FILE).exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    run_dir = tmp_path / "run"
    _two_generations(run_dir)
    previous = ckpt.load(run_dir / ckpt.PREVIOUS_FILE)["clock"]["env_steps"]
    newest = run_dir / ckpt.CHECKPOINT_FILE
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2] if damage == "truncated" else os.urandom(len(data)))
    done = launch(run_dir, *SHORT, "t_max=600", "checkpoint.interval=200", "eval.interval=200")
    assert done.returncode == 0, done.stderr
    no_traceback(done.stderr)
    assert f"{newest} is unreadable" in done.stderr
    assert f"Resuming from the previous checkpoint {run_dir / ckpt.PREVIOUS_FILE}" in done.stderr
    assert f"from its checkpoint at env_steps={previous}," in done.stderr
    assert read_metrics(run_dir)[-1].get("final") == 1.0


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_an_unreadable_checkpoint_without_a_good_predecessor_is_a_clear_error(tmp_path, damage):
    run_dir = tmp_path / "run"
    _two_generations(run_dir)
    (run_dir / ckpt.PREVIOUS_FILE).unlink()
    newest = run_dir / ckpt.CHECKPOINT_FILE
    data = newest.read_bytes()
    newest.write_bytes(data[:100] if damage == "truncated" else b"\x00garbage" * 100)
    metrics = (run_dir / "metrics.jsonl").read_bytes()
    done = launch(run_dir, *SHORT, "t_max=600", "checkpoint.interval=200")
    assert done.returncode == 2, done.stderr
    no_traceback(done.stderr)
    assert f"Cannot start the run: {newest} is unreadable" in done.stderr
    assert f"mv {newest} {newest}.bad" in done.stderr and "restore a good copy" in done.stderr
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics  # nothing was truncated
    assert not (run_dir / "status.json").exists()


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    _two_generations(run_dir)
    marker = tmp_path / "code-ran"
    for name in (ckpt.CHECKPOINT_FILE, ckpt.PREVIOUS_FILE):
        state = ckpt.load(run_dir / name)
        state["evil"] = _RunsCode(marker)
        torch.save(state, run_dir / name)
    with pytest.raises(RunFolderError, match="would run code when loaded"):
        Experiment(run_config(run_dir, *SHORT, "t_max=600", "checkpoint.interval=200"))
    assert not marker.exists()


# --- a full disk -----------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs: room for the run's files and its first checkpoints, not for later ones."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root (this test runs as root on CI)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_stops_the_run_with_the_previous_checkpoint_intact(small_disk):
    run_dir = small_disk / "run"
    # The buffer (all of it in each checkpoint) grows by ~16 KiB per 25-step episode until the disk is full.
    done = launch(run_dir, *SHORT, "buffer.capacity=5000", "t_max=200000", "checkpoint.interval=500",
                  "eval.interval=100000")
    assert done.returncode == 1, done.stderr
    no_traceback(done.stderr)
    assert "Run failed" in done.stderr and "WriteError: could not write" in done.stderr
    assert "No space left on device" in done.stderr and "MiB free there" in done.stderr
    assert not list(run_dir.glob("*.tmp*")), list(run_dir.iterdir())
    state = ckpt.load(run_dir / ckpt.CHECKPOINT_FILE)  # intact and readable
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line whole
    assert state["clock"]["env_steps"] <= records[-1]["env_steps"]
    assert state["logger"]["jsonl_offset"] <= (run_dir / "metrics.jsonl").stat().st_size


# --- W&B outage ------------------------------------------------------------------------------------
@pytest.fixture
def silent_server():
    """A W&B 'server' on a local port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.parametrize("inherited_service", [False, True])
def test_a_wandb_outage_costs_the_timeout_and_the_run_logs_offline(tmp_path, silent_server, inherited_service,
                                                                   monkeypatch):
    """``inherited_service``: the run is started by a process that uses W&B itself, so it inherits that
    process's W&B service (WANDB_SERVICE), which outlives the failed online start's teardown; the
    offline retry must not go to it (it still holds the run id: "run ID ... is in use")."""
    run_dir = tmp_path / "run"
    env = {"WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": f"http://127.0.0.1:{silent_server}",
           "WANDB_MODE": None, "WANDB_SILENT": "true"}
    if inherited_service:
        import wandb

        wandb.teardown()  # this process's own fresh service, whose token the run inherits
        monkeypatch.delenv("WANDB_SERVICE", raising=False)
        parent = wandb.init(mode="offline", dir=str(tmp_path), reinit="create_new",
                            settings=wandb.Settings(silent=True, console="off"))
        parent.finish()
        assert os.environ.get("WANDB_SERVICE"), "this W&B version no longer shares its service through WANDB_SERVICE"
    started = time.monotonic()
    done = launch(run_dir, *SHORT, "t_max=400", "eval.interval=200", "logger.wandb.init_timeout_s=3",
                  wandb="auto", env=env, timeout=120)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "W&B online start failed within 3 s" in done.stderr and "logging offline" in done.stderr
    assert "W&B start failed, continuing without it" not in done.stderr
    assert took < 60, f"the outage cost {took:.0f} s"
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    offline = list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert offline and list(offline[0].glob("*.wandb")) and list(offline[0].glob("*.wandb"))[0].stat().st_size > 0
    assert read_metrics(run_dir)[-1].get("final") == 1.0


def test_a_sweep_goes_on_past_a_failed_run_and_counts_it(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "launch.py"), "-m", "logger.wandb.mode=disabled", "logger.console=false",
           *SHORT, "learner.lr=10000,0.0005", "learner.grad_clip=1e9", "t_max=600", "eval.interval=300",
           f"hydra.sweep.dir={sweep}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    no_traceback(done.stdout + done.stderr)
    assert "1 run(s) failed" in done.stdout and "learner.lr=10000: NonFiniteError" in done.stdout
    assert "python -m marl.report" in done.stdout
    (good,) = [p for p in sweep.iterdir() if "0.0005" in p.name]
    assert read_metrics(good)[-1].get("final") == 1.0  # the other run finished


def test_a_finished_run_kept_without_checkpoints_is_not_trained_again(tmp_path):
    """Committed results (config.yaml + metrics.jsonl) survive a relaunch of their sweep."""
    run_dir = tmp_path / "run"
    run(run_config(run_dir, *SHORT, "t_max=400", "checkpoint.interval=200", "eval.interval=200"))
    for name in (ckpt.CHECKPOINT_FILE, ckpt.PREVIOUS_FILE):
        (run_dir / name).unlink()
    metrics = (run_dir / "metrics.jsonl").read_bytes()
    done = launch(run_dir, *SHORT, "t_max=400", "checkpoint.interval=200", "eval.interval=200")
    assert done.returncode == 0, done.stderr
    assert "holds a finished run" in done.stderr
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics and not (run_dir / ckpt.CHECKPOINT_FILE).exists()


def test_a_finished_run_with_its_checkpoint_is_not_repeated_and_a_longer_one_continues(tmp_path):
    run_dir = tmp_path / "run"
    args = (*SHORT, "checkpoint.interval=200", "eval.interval=200")
    run(run_config(run_dir, *args, "t_max=400"))
    metrics = (run_dir / "metrics.jsonl").read_bytes()
    run(run_config(run_dir, *args, "t_max=400"))  # a relaunched sweep
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics  # no second final evaluation
    run(run_config(run_dir, *args, "t_max=600"))  # extended: continues from its checkpoint
    assert read_metrics(run_dir)[-1] == {**read_metrics(run_dir)[-1], "final": 1.0, "env_steps": 600}
