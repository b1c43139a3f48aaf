"""Checkpoints and resume (docs/architecture.md, invariant 6), without SLURM.

* every component's state survives a checkpoint round trip (learner nets, targets and optimizer,
  the replay buffer after wrapping around, RNG states, the runner's in-flight episodes, schedules);
* a run stopped through :mod:`marl.preemption` and started again in its folder ends bitwise equal
  to the uninterrupted run with the same seed, with the same metrics.jsonl records;
* ``resume=PATH`` continues a copied run folder; a different algorithm there is refused;
* a run killed with SIGKILL and restarted loses at most the steps since its last checkpoint;
* a crash while writing a checkpoint leaves the previous one loadable and no temp file behind.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from marl import checkpoint as ckpt
from marl import preemption
from marl.buffers import allocate
from marl.buffers.episode import EpisodeBuffer
from marl.clock import Clock, Every
from marl.errors import ConfigError, WriteError
from marl.experiment import Experiment, run
from marl.logger import WANDB_ID_FILE
from marl.registry import ENVS
from marl.runner import Runner

from helpers import read_metrics, run_config

ROOT = Path(__file__).resolve().parents[1]
SMALL = ("learner.batch_size=8", "buffer.capacity=20", "eval.episodes=4", "eval.num_envs=2",
         "learner.target_update_interval=10", "epsilon.anneal=1000", "threads=1")
# Two envs, several parallel copies each; the buffer (20 episodes) wraps around in both.
CASES = {
    "two_step": ("env=two_step", "num_envs=4", "t_max=400", "eval.interval=100", "logger.interval=50",
                 "checkpoint.interval=150", *SMALL),
    "climbing": ("env=climbing", "num_envs=3", "t_max=1200", "eval.interval=300", "logger.interval=150",
                 "checkpoint.interval=450", *SMALL),
}
WALL_CLOCK = ("time", "steps_per_sec")  # the only fields allowed to differ between two runs


# --- helpers ---------------------------------------------------------------------------------------
def assert_same(a: Any, b: Any, path: str = "state") -> None:
    """Bitwise equality of nested checkpoint-like structures, naming the first difference."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), f"{path} differs"
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{path}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif dataclasses.is_dataclass(a):
        assert type(a) is type(b), path
        assert_same(dataclasses.asdict(a), dataclasses.asdict(b), path)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def records(run_dir: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in read_metrics(run_dir)]


def final_state(run_dir: Path) -> dict[str, Any]:
    state = ckpt.load(run_dir / ckpt.CHECKPOINT_FILE)
    return {k: state[k] for k in ("clock", "learner", "buffer", "rng", "schedules", "pending_updates")}


def stop_at(monkeypatch: pytest.MonkeyPatch, env_steps: list[int], send_signal: bool = False) -> list[int]:
    """Make the loop request a stop (or send itself USR2) once it reaches each of ``env_steps``."""
    pending = sorted(env_steps)
    fired: list[int] = []
    original = Experiment._collect_and_learn

    def collect_then_maybe_stop(self: Experiment) -> None:
        original(self)
        if pending and self.clock.env_steps >= pending[0]:
            pending.pop(0)
            fired.append(self.clock.env_steps)
            if send_signal:
                os.kill(os.getpid(), signal.SIGUSR2)
            else:
                preemption.request()

    monkeypatch.setattr(Experiment, "_collect_and_learn", collect_then_maybe_stop)
    return fired


def run_until_done(cfg: Any, max_stops: int = 10) -> int:
    """Start the run again in its folder after every stop; return the number of stops."""
    for stops in range(max_stops):
        preemption.clear()
        try:
            run(cfg)
            return stops
        except preemption.Preempted:
            continue
    raise AssertionError("the run never finished")


@pytest.fixture(autouse=True)
def _clear_flag():
    preemption.clear()
    yield
    preemption.clear()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One uninterrupted run per case, shared by the tests of this module."""
    dirs = {}
    for name, overrides in CASES.items():
        d = tmp_path_factory.mktemp(f"ref-{name}")
        run(run_config(d, *overrides))
        dirs[name] = d
    return dirs


# --- round trips of every component ------------------------------------------------------------
@pytest.mark.parametrize("mixer", ["qmix", "vdn", "none", "ow_qmix", "cw_qmix", "qplex"])
def test_learner_round_trip_keeps_nets_targets_and_optimizer(tmp_path, mixer):
    exp = Experiment(run_config(tmp_path / "a", "env=climbing", f"mixer={mixer}", *CASES["climbing"][1:]))
    while exp.clock.grad_steps < 5:  # non-trivial optimizer moments
        exp._collect_and_learn()
    exp.learner.update_targets()
    exp._collect_and_learn()  # online and target nets now differ
    ckpt.save_atomic({"learner": exp.learner.state_dict()}, tmp_path / "l.pt")
    other = Experiment(run_config(tmp_path / "b", "env=climbing", f"mixer={mixer}", "seed=7", *CASES["climbing"][1:]))
    other.learner.load_state_dict(ckpt.load(tmp_path / "l.pt")["learner"])
    assert_same(other.learner.state_dict(), exp.learner.state_dict(), "learner")
    # The next update is identical too: optimizer moments and step counts came back.
    batch = exp.buffer.sample(8, torch.Generator().manual_seed(0))
    exp.learner.update(batch)
    other.learner.update(batch)
    assert_same(other.learner.state_dict(), exp.learner.state_dict(), "learner after one update")


def _episodes(spec: Any, k: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    eps = allocate(spec, k)
    for key, v in eps.items():
        if v.dtype == torch.bool:
            v.copy_(torch.rand(v.shape, generator=gen) < 0.5)
        elif v.dtype.is_floating_point:
            v.copy_(torch.randn(v.shape, generator=gen))
        else:
            v.copy_(torch.randint(0, spec.n_actions, v.shape, generator=gen))
    lengths = torch.randint(1, eps["filled"].shape[1] + 1, (k,), generator=gen)
    eps["filled"].copy_(torch.arange(eps["filled"].shape[1]) < lengths.unsqueeze(1))
    return eps


def test_buffer_round_trip_after_wrap_around(tmp_path):
    spec = ENVS.build(run_config(tmp_path, "env=climbing").env, num_envs=1, seed=0).spec
    gen = torch.Generator().manual_seed(0)
    buf = EpisodeBuffer(spec, capacity=5)
    for k in (3, 3, 2):  # 8 episodes into 5 slots: wrapped, write position 3
        buf.insert(_episodes(spec, k, gen))
    assert (buf.size, buf.pos) == (5, 3)
    ckpt.save_atomic({"buffer": buf.state_dict()}, tmp_path / "b.pt")
    other = EpisodeBuffer(spec, capacity=5)
    other.load_state_dict(ckpt.load(tmp_path / "b.pt")["buffer"])
    assert (other.size, other.pos) == (5, 3)
    assert_same(other.data, buf.data, "data")
    assert_same(other.lengths, buf.lengths, "lengths")
    more = _episodes(spec, 4, gen)  # both keep wrapping the same way
    buf.insert(more)
    other.insert(more)
    assert_same(other.data, buf.data, "data after more inserts")
    assert_same(other.sample(4, torch.Generator().manual_seed(1)), buf.sample(4, torch.Generator().manual_seed(1)))


def test_buffer_is_left_out_above_its_size_guard_and_the_run_still_resumes(tmp_path, monkeypatch):
    cfg = run_config(tmp_path, *CASES["two_step"], "checkpoint.buffer_max_mb=0")
    stop_at(monkeypatch, [200])
    with pytest.raises(preemption.Preempted):
        run(cfg)
    assert ckpt.load(tmp_path / ckpt.CHECKPOINT_FILE)["buffer"] is None
    preemption.clear()
    run(cfg)  # resumes with an empty buffer (not bitwise: the replay history is gone)
    assert read_metrics(tmp_path)[-1]["env_steps"] == 400


def test_rng_states_round_trip(tmp_path):
    ckpt.seed_everything(3)
    gens = {"act": torch.Generator().manual_seed(4), "sample": torch.Generator().manual_seed(5)}
    torch.rand(3, generator=gens["act"])
    ckpt.save_atomic({"rng": ckpt.rng_state(gens)}, tmp_path / "r.pt")

    def draw() -> list[Any]:
        return [random.random(), np.random.rand(), torch.rand(2), torch.rand(2, generator=gens["act"]),
                torch.randperm(6, generator=gens["sample"])]

    first = draw()
    ckpt.seed_everything(99)
    gens["act"].manual_seed(0)
    gens["sample"].manual_seed(0)
    ckpt.set_rng_state(ckpt.load(tmp_path / "r.pt")["rng"], gens)
    assert_same(draw(), first, "draws")


def test_runner_round_trip_continues_in_flight_episodes(tmp_path):
    def make(name: str) -> tuple[Runner, torch.Generator]:
        exp = Experiment(run_config(tmp_path / name, "env=climbing", "num_envs=3", f"seed={len(name)}"))
        exp.logger.close()
        return exp.runner, exp.generators["act"]

    runner, gen = make("a")
    for _ in range(7):  # 7 of 25 steps: every episode is in flight
        runner.step(epsilon=1.0)
    ckpt.save_atomic({"runner": runner.state_dict(), "gen": gen.get_state()}, tmp_path / "run.pt")
    other, other_gen = make("bb")
    other.policy.load_state_dict(runner.policy.state_dict())
    state = ckpt.load(tmp_path / "run.pt")
    other.load_state_dict(state["runner"])
    other_gen.set_state(state["gen"])
    outs = [[r.step(epsilon=0.5) for _ in range(43)] for r in (runner, other)]
    finished = [(a.episodes, a.returns, a.lengths) for a in outs[0] if a.episodes is not None]
    assert len(finished) == 2  # the in-flight episodes ended (step 25), then new ones (step 50)
    for a, b in zip(*outs):
        assert_same((a.episodes, a.returns, a.lengths), (b.episodes, b.returns, b.lengths), "step result")
    assert_same(other.stage, runner.stage, "staging batch")
    assert_same(other.hidden, runner.hidden, "hidden state")


def test_schedules_round_trip():
    clock, every = Clock(), Every(100, "env_steps")
    fired = []
    for step in range(0, 1000, 30):
        clock.env_steps = step
        if step == 330:
            every = Every(100, "env_steps")
            every.load_state_dict(saved)
        fired.append(every.due(clock))
        saved = every.state_dict()
    reference = Every(100, "env_steps")
    want = []
    for step in range(0, 1000, 30):
        clock.env_steps = step
        want.append(reference.due(clock))
    assert fired == want and sum(fired) == 9


def test_experiment_checkpoint_holds_everything_and_reloads_it_unchanged(tmp_path):
    cfg = run_config(tmp_path, *CASES["climbing"])
    exp = Experiment(cfg)
    while exp.clock.env_steps < 400:
        exp._collect_and_learn()
    exp.save()
    exp.close()
    saved = ckpt.load(tmp_path / ckpt.CHECKPOINT_FILE)
    assert {"clock", "schedules", "learner", "buffer", "runner", "rng", "pending_updates", "window",
            "logger", "seeds", "eval_env", "evaluated_at"} <= set(saved)
    assert saved["runner"]  # the in-flight episodes are in it
    again = Experiment(cfg)  # resumes from the folder
    again.save()
    again.close()
    resaved = ckpt.load(tmp_path / ckpt.CHECKPOINT_FILE)
    # The wall time is the one field that moves: the resumed run continues it, never restarts it.
    assert resaved["logger"].pop("time") >= saved["logger"].pop("time") > 0
    assert_same(resaved, saved, "checkpoint")


# --- interrupted runs end where uninterrupted ones do ----------------------------------------------
@pytest.mark.parametrize("case, stops", [
    ("two_step", [70]),          # mid-run, before the buffer holds a batch
    ("two_step", [100, 302]),    # twice: on an eval step, then between checkpoints
    ("two_step", [400]),         # on the last iteration, right after the eval at t_max
    ("climbing", [522]),         # mid-episode (25-step episodes, 3 envs)
    ("climbing", [900, 1050]),   # on a checkpoint step, then after the last periodic one
])
def test_interrupted_run_ends_bitwise_equal_to_uninterrupted(tmp_path, monkeypatch, reference, case, stops):
    fired = stop_at(monkeypatch, stops)
    n = run_until_done(run_config(tmp_path, *CASES[case]))
    assert n == len(stops) and len(fired) == len(stops)
    assert records(tmp_path) == records(reference[case])  # no duplicate, no missing record
    assert read_metrics(tmp_path)[-1].get("final") == 1.0
    times = [r["time"] for r in read_metrics(tmp_path)]
    assert times == sorted(times), "a resumed run's wall time restarted instead of continuing"
    assert_same(final_state(tmp_path), final_state(reference[case]), "final checkpoint")


def test_usr2_in_process_checkpoints_then_stops_and_restores_handlers(tmp_path, monkeypatch, reference):
    before = signal.getsignal(signal.SIGUSR2)
    stop_at(monkeypatch, [200], send_signal=True)
    cfg = run_config(tmp_path, *CASES["two_step"])
    with pytest.raises(preemption.Preempted), preemption.preemptible():
        run(cfg)
    assert preemption.requested_by() == "SIGUSR2"
    assert signal.getsignal(signal.SIGUSR2) is before
    assert ckpt.load(tmp_path / ckpt.CHECKPOINT_FILE)["clock"]["env_steps"] == 200
    run_until_done(cfg)
    assert records(tmp_path) == records(reference["two_step"])


def test_under_submitit_usr2_checkpoints_before_submitit_requeues(tmp_path, monkeypatch):
    """The wiring of marl.slurm, with submitit's handler replaced by a recorder."""
    from submitit.core.job_environment import SignalHandler

    calls: list[dict[str, Any]] = []

    def fake_requeue(self: Any, signum: int, frame: Any = None) -> None:
        state = ckpt.load(tmp_path / ckpt.CHECKPOINT_FILE)  # the checkpoint exists when it runs
        calls.append({"signum": signum, "env_steps": state["clock"]["env_steps"]})
        raise SystemExit(-1)  # as submitit's handler does after `scontrol requeue`

    monkeypatch.setattr(SignalHandler, "checkpoint_and_try_requeue", fake_requeue)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    handler = SignalHandler.__new__(SignalHandler)
    previous = signal.signal(signal.SIGUSR2, handler.checkpoint_and_try_requeue)
    try:
        stop_at(monkeypatch, [200], send_signal=True)
        with pytest.raises(SystemExit), preemption.preemptible():
            run(run_config(tmp_path, *CASES["two_step"]))
        assert calls == [{"signum": signal.SIGUSR2, "env_steps": 200}]
        assert signal.getsignal(signal.SIGUSR2) == handler.checkpoint_and_try_requeue
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_resume_path_continues_a_copied_run_folder(tmp_path, monkeypatch, reference):
    stop_at(monkeypatch, [200])
    with pytest.raises(preemption.Preempted):
        run(run_config(tmp_path / "first", *CASES["two_step"]))
    shutil.copytree(tmp_path / "first", tmp_path / "copy")
    preemption.clear()
    run(run_config(tmp_path / "elsewhere", *CASES["two_step"], f"resume={tmp_path / 'copy'}"))
    assert records(tmp_path / "copy") == records(reference["two_step"])
    assert_same(final_state(tmp_path / "copy"), final_state(reference["two_step"]), "final checkpoint")
    assert ckpt.load(tmp_path / "first" / ckpt.CHECKPOINT_FILE)["clock"]["env_steps"] == 200  # untouched


def test_resume_refuses_a_different_algorithm(tmp_path, monkeypatch):
    stop_at(monkeypatch, [100])
    with pytest.raises(preemption.Preempted):
        run(run_config(tmp_path, *CASES["two_step"]))
    with pytest.raises(ConfigError, match=r"mixer\.name='qmix' in the folder, 'vdn' now"):
        run(run_config(tmp_path / "other", *CASES["two_step"], "mixer=vdn", f"resume={tmp_path}"))
    # A longer t_max is allowed: the run continues past its old end.
    preemption.clear()
    run(run_config(tmp_path / "other", *CASES["two_step"], "t_max=500", f"resume={tmp_path}"))
    assert read_metrics(tmp_path)[-1]["env_steps"] == 500


def test_a_run_saved_before_a_key_existed_resumes_at_its_default_and_not_at_another(tmp_path):
    from omegaconf import OmegaConf

    from marl.experiment import CONFIG_FILE, check_resumable

    # LBF's config as an older version saved it: no learner.time_limit_end, no env.action_masks.
    cfg = run_config(tmp_path, "env=lbf")
    saved = OmegaConf.to_container(cfg, resolve=False)
    del saved["learner"]["time_limit_end"], saved["env"]["action_masks"]
    OmegaConf.save(OmegaConf.create(saved), tmp_path / CONFIG_FILE)
    check_resumable(cfg, tmp_path)  # both were running at today's defaults
    with pytest.raises(ConfigError, match=r"learner\.time_limit_end='bootstrap' in the folder, 'terminal' now"):
        check_resumable(run_config(tmp_path, "env=lbf", "learner.time_limit_end=terminal"), tmp_path)
    with pytest.raises(ConfigError, match=r"env\.action_masks=True in the folder, False now"):
        check_resumable(run_config(tmp_path, "env=lbf", "env.action_masks=false"), tmp_path)


def test_resumed_run_continues_the_same_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = run_config(tmp_path, *CASES["two_step"], "t_max=200", "logger.wandb.mode=offline")
    stop_at(monkeypatch, [100])
    with pytest.raises(preemption.Preempted):
        run(cfg)
    run_id = (tmp_path / WANDB_ID_FILE).read_text().strip()
    preemption.clear()
    run(cfg)
    assert (tmp_path / WANDB_ID_FILE).read_text().strip() == run_id
    runs = sorted(p.name for p in (tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(name.endswith(run_id) for name in runs), runs


# --- crashes ---------------------------------------------------------------------------------------
def test_sigkill_loses_at_most_the_steps_since_the_last_checkpoint(tmp_path):
    overrides = ["env=climbing", "num_envs=2", "t_max=2000", "eval.interval=1000", "logger.interval=100",
                 "checkpoint.interval=400", *SMALL]
    cmd = [sys.executable, str(ROOT / "launch.py"), *overrides, "logger.wandb.mode=disabled",
           "logger.console=false", f"hydra.run.dir={tmp_path / 'run'}"]
    run_dir, ckpt_file = tmp_path / "run", tmp_path / "run" / ckpt.CHECKPOINT_FILE
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not ckpt_file.exists():
        assert proc.poll() is None, f"the run ended before its first checkpoint:\n{proc.stderr.read()}"
        assert time.time() < deadline, "no checkpoint within 120 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    saved = ckpt.load(ckpt_file)["clock"]["env_steps"]
    logged = read_metrics(run_dir)[-1]["env_steps"]
    assert 400 <= saved < 2000 and logged - saved < 400  # what is lost: at most one checkpoint interval

    done = subprocess.run(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"from its checkpoint at env_steps={saved}," in done.stderr  # resumed, not restarted
    run(run_config(tmp_path / "ref", *overrides))
    assert records(run_dir) == records(tmp_path / "ref")
    assert_same(final_state(run_dir), final_state(tmp_path / "ref"), "final checkpoint")


def test_a_crash_while_saving_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    cfg = run_config(tmp_path, *CASES["two_step"])
    exp = Experiment(cfg)
    while exp.clock.env_steps < 200:
        exp._collect_and_learn()
    exp.save()
    good = ckpt.load(tmp_path / ckpt.CHECKPOINT_FILE)
    while exp.clock.env_steps < 300:
        exp._collect_and_learn()

    def crash_mid_write(obj: Any, f: Any) -> None:
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", crash_mid_write)
    with pytest.raises(WriteError, match="disk full"):
        exp.save()
    monkeypatch.undo()
    exp.close()
    assert not list(tmp_path.glob("*.tmp*"))  # the torn temp file was removed
    assert_same(ckpt.load(tmp_path / ckpt.CHECKPOINT_FILE), good, "checkpoint")
    resumed = Experiment(cfg)
    assert resumed.clock.env_steps == 200
    resumed.close()
