"""``seeds_per_process``: a sweep's seeds trained in one process, each still its own run.

* the sweep's folders, configs and seeds are those of the same sweep without the option;
* equivalence: on a matrix game and on LBF, each member's first 50 losses match its standalone
  run's (float tolerance: batched and unbatched kernels round differently), and the two-step game
  gives QMIX 8 / VDN 7 for every member;
* resume: a group killed with SIGKILL and relaunched ends bitwise equal to the uninterrupted
  group, member by member.
(That members do not touch each other is tested on the learner, tests/test_vector_learner.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from marl import checkpoint as ckpt
from marl import preemption, vector_experiment
from marl.errors import NonFiniteError
from marl.experiment import Experiment, run
from marl.vector_experiment import run_group
from marl.vector_learner import VectorLearner

from helpers import final_eval, read_metrics, run_config
from test_resume import assert_same, final_state, records

ROOT = Path(__file__).resolve().parents[1]
QUIET = ("logger.wandb.mode=disabled", "logger.console=false")
CLIMBING = ("env=climbing", "t_max=2500", "learner.batch_size=8", "buffer.capacity=100", "eval.interval=1000",
            "eval.episodes=4", "eval.num_envs=2", "logger.interval=25", "checkpoint.interval=500")
LBF = ("env=lbf", "t_max=1500", "learner.batch_size=4", "buffer.capacity=50", "eval.interval=1500",
       "eval.episodes=2", "eval.num_envs=2", "logger.interval=10", "checkpoint.interval=1500",
       "env.time_limit=15", "num_envs=1")  # one env: a log record (and loss) every 10 env steps


def sweep(out: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(ROOT / "launch.py"), "-m", *QUIET, *args, f"hydra.sweep.dir={out}",
           "hydra.launcher.n_jobs=1"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def losses(run_dir: Path, n: int = 50) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir) if "loss" in r][:n]


@pytest.mark.parametrize("case", [CLIMBING, LBF], ids=["climbing", "lbf"])
def test_members_are_the_runs_of_the_plain_sweep(tmp_path, case):
    sweep(tmp_path / "vec", *case, "seed=0-2", "seeds_per_process=3")
    names = sorted(p.name for p in (tmp_path / "vec").iterdir() if not p.name.startswith(".") and p.is_dir())
    assert names == ["0_seed=0", "1_seed=1", "2_seed=2"]
    for seed, name in enumerate(names):
        member = tmp_path / "vec" / name
        cfg = OmegaConf.load(member / "config.yaml")
        assert cfg.seed == seed and cfg.seeds_per_process == 3 and cfg.vector_group is None
        assert json.loads((member / "seeds.json").read_text())["root"] == seed
        assert f"seed={seed}" in OmegaConf.load(member / ".hydra" / "overrides.yaml")
        assert read_metrics(member)[-1].get("final") == 1.0
        # The same seed alone: the same first 50 losses, up to the rounding of batched kernels.
        alone = tmp_path / f"alone{seed}"
        run(run_config(alone, *case, f"seed={seed}"))
        want, got = losses(alone), losses(member)
        assert len(got) == len(want) == 50
        for i, (a, b) in enumerate(zip(got, want)):
            assert a == pytest.approx(b, rel=2e-3, abs=1e-4), f"seed {seed}, update {i}: {a} vs {b}"


def test_a_seed_left_over_by_the_grouping_runs_as_a_plain_run(tmp_path):
    """seed=0-2 with seeds_per_process=2: seeds 0 and 1 train as a group, and seed 2, left over,
    runs as the plain job it would be without the option (a group of one would batch nothing and
    compute every update twice), so its records are bitwise those of the same seed run alone."""
    sweep(tmp_path / "vec", *CLIMBING, "seed=0-2", "seeds_per_process=2")
    assert sorted(p.name for p in (tmp_path / "vec" / ".groups").iterdir()) == ["0.json"]
    left = tmp_path / "vec" / "2_seed=2"
    cfg = OmegaConf.load(left / "config.yaml")
    assert cfg.seed == 2 and cfg.seeds_per_process == 2 and cfg.vector_group is None
    alone = tmp_path / "alone"
    run(run_config(alone, *CLIMBING, "seed=2"))
    assert read_metrics(left)[-1].get("final") == 1.0
    assert records(left) == records(alone)


def test_two_step_gives_qmix_8_and_vdn_7_for_every_member(tmp_path):
    sweep(tmp_path / "s", "preset=two_step_paper", "mixer=qmix,vdn", "seed=0-2", "seeds_per_process=3")
    for d in (tmp_path / "s").glob("*_mixer=*"):
        assert final_eval(d) == (8.0 if "qmix" in d.name else 7.0), d.name


def test_a_killed_group_resumes_every_member_bitwise(tmp_path):
    args = (*CLIMBING, "t_max=4000", "seed=0-2", "seeds_per_process=3")
    sweep(tmp_path / "ref", *args)
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "launch.py"), "-m", *QUIET, *args, f"hydra.sweep.dir={out}",
           "hydra.launcher.n_jobs=1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not all((out / f"{i}_seed={i}" / ckpt.PREVIOUS_FILE).exists() for i in range(3)):
        assert proc.poll() is None and time.time() < deadline, "no second checkpoint of every member"
        time.sleep(0.05)
    holder = json.loads((out / "0_seed=0" / "run.lock").read_text())["pid"]  # the group's one process
    os.kill(holder, signal.SIGKILL)
    proc.kill()
    proc.wait()
    assert any(read_metrics(out / f"{i}_seed={i}")[-1].get("final") != 1.0 for i in range(3))
    sweep(out, *args)  # the same command again resumes every member
    for i in range(3):
        name = f"{i}_seed={i}"
        assert records(out / name) == records(tmp_path / "ref" / name), name
        assert_same(final_state(out / name), final_state(tmp_path / "ref" / name), f"member {i}")


def _group(tmp_path: Path, name: str, *overrides: str):
    """A group of seeds 0-2 run in this process, as a group job would be."""
    members = [{"seed": s, "run_dir": str(tmp_path / name / f"m{s}"), "overrides": [f"seed={s}"]} for s in range(3)]
    (tmp_path / f"{name}.json").write_text(json.dumps({"members": members}))
    return run_config(tmp_path / name / "m0", *CLIMBING, *overrides, "seeds_per_process=3",
                      f"vector_group={tmp_path / f'{name}.json'}")


def poison_member_1(monkeypatch) -> None:
    """Member seed=1's sampled rewards become NaN from its 5th gradient step on: it diverges."""
    original = Experiment.sample

    def poisoned(self: Experiment):
        batch = original(self)
        if self.cfg.seed == 1 and self.clock.grad_steps >= 5:
            batch = {**batch, "reward": batch["reward"] * float("nan")}
        return batch

    monkeypatch.setattr(Experiment, "sample", poisoned)


def test_a_member_that_diverges_fails_alone_and_the_others_are_untouched(tmp_path, monkeypatch):
    clean = run_group(_group(tmp_path, "clean"))
    assert all(isinstance(r, dict) for r in clean)
    poison_member_1(monkeypatch)
    results = run_group(_group(tmp_path, "hurt"))
    assert isinstance(results[1], NonFiniteError) and "non-finite loss" in str(results[1])
    status = json.loads((tmp_path / "hurt" / "m1" / "status.json").read_text())
    assert status["status"] == "failed" and status["grad_steps"] == 5
    for s in (0, 2):
        assert isinstance(results[s], dict)
        assert records(tmp_path / "hurt" / f"m{s}") == records(tmp_path / "clean" / f"m{s}"), f"member {s}"


HOLD = """
import sys, time
from pathlib import Path
from marl.runlock import RunLock
lock = RunLock(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(600)
"""


def test_a_member_whose_folder_is_held_is_refused_alone_and_the_others_train(tmp_path):
    """Another process holds member seed=1's folder: that member is refused (on the console and in
    the group file, with the holder named), its folder is left byte for byte as it was,
    and seeds 0 and 2 train to the end: the job succeeds."""
    out = tmp_path / "s"
    held = out / "1_seed=1"
    held.mkdir(parents=True)
    (held / "mine.txt").write_text("the holder's own file\n")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(held)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        before = {p.name: p.read_bytes() for p in held.iterdir()}
        done = sweep(out, *CLIMBING, "seed=0-2", "seeds_per_process=3")
    finally:
        holder.kill()
        holder.wait()
    refusal = f"Cannot start the run: run folder {held.resolve()} is in use by another process (pid {holder.pid}"
    assert refusal in done.stderr, done.stderr[-3000:]
    assert {p.name: p.read_bytes() for p in held.iterdir()} == before  # no config, seeds, metrics, .hydra
    for seed in (0, 2):
        assert read_metrics(out / f"{seed}_seed={seed}")[-1].get("final") == 1.0, seed
    members = vector_experiment.read_group(out / ".groups" / "0.json")
    assert [(m["seed"], m["outcome"]) for m in members] == [(0, "finished"), (1, "refused"), (2, "finished")]
    assert f"is in use by another process (pid {holder.pid}" in members[1]["reason"]


def test_a_failed_member_prints_where_its_status_and_traceback_are(tmp_path, monkeypatch, capsys):
    """A member's failure prints the plain run's two lines (launch.py): what failed, and the paths
    of its status.json and error.log; the group file lists it as failed, with the reason."""
    poison_member_1(monkeypatch)
    cfg = _group(tmp_path, "g")
    results = run_group(cfg)
    m1 = (tmp_path / "g" / "m1").resolve()
    err = capsys.readouterr().err
    assert "Run failed [climbing qmix seed=1]: NonFiniteError: training diverged at env_steps=" in err
    assert f"Recorded as failed in {m1 / 'status.json'}; traceback in {m1 / 'error.log'}." in err
    assert "NonFiniteError" in (m1 / "error.log").read_text()
    members = vector_experiment.read_group(cfg.vector_group)
    assert [m["outcome"] for m in members] == ["finished", "failed", "finished"]
    assert members[1]["reason"] == f"NonFiniteError: {results[1]}" and "non-finite loss" in members[1]["reason"]


def _stop_when_seed_0_reaches(env_steps: int, monkeypatch) -> None:
    """A stop request (as USR2 or SIGTERM sends) once member seed 0 completes env step ``env_steps``."""
    original = Experiment.after_step

    def stop_once(self: Experiment) -> None:
        if self.clock.env_steps == env_steps and self.cfg.seed == 0:
            preemption.request()
        original(self)

    monkeypatch.setattr(Experiment, "after_step", stop_once)


def test_a_stop_request_checkpoints_every_member_and_the_group_resumes_bitwise(tmp_path, monkeypatch):
    run_group(_group(tmp_path, "ref"))
    _stop_when_seed_0_reaches(1300, monkeypatch)
    with pytest.raises(preemption.Preempted):
        run_group(_group(tmp_path, "run"))
    preemption.clear()
    saved = [ckpt.load(tmp_path / "run" / f"m{s}" / ckpt.CHECKPOINT_FILE)["clock"]["env_steps"] for s in range(3)]
    assert saved == [1300, 1300, 1300]
    monkeypatch.undo()
    run_group(_group(tmp_path, "run"))
    for s in range(3):
        assert records(tmp_path / "run" / f"m{s}") == records(tmp_path / "ref" / f"m{s}"), f"member {s}"
        assert_same(final_state(tmp_path / "run" / f"m{s}"), final_state(tmp_path / "ref" / f"m{s}"), f"member {s}")


# One food on a 5x5 grid: random agents often take it before the time limit, so the members'
# episodes end at different steps (on 8x8 with two food they all run to the limit together).
LBF_UNEVEN = (*LBF, "env.key=Foraging-5x5-2p-1f-v3")


def test_lbf_members_park_and_every_update_is_a_full_round(tmp_path, monkeypatch):
    """LBF's episodes end at different steps for different members, so members are due at
    different steps; a due member waits (parked) and every batched update takes one step of every
    live member: the group makes as many update calls as its longest-lived member takes steps."""
    sizes: list[int] = []
    original = VectorLearner.update

    def counting(self, batches):
        sizes.append(sum(b is not None for b in batches))
        return original(self, batches)

    monkeypatch.setattr(VectorLearner, "update", counting)
    results = run_group(_group(tmp_path, "lbf", *LBF_UNEVEN))
    assert all(isinstance(r, dict) for r in results)
    last = [read_metrics(tmp_path / "lbf" / f"m{s}")[-1] for s in range(3)]
    assert len({r["episodes"] for r in last}) > 1, "members' episodes should end at different steps"
    steps = [r["grad_steps"] for r in last]
    assert len(sizes) == max(steps) and sum(sizes) == sum(steps)
    assert sizes[0] == 3 and sizes == sorted(sizes, reverse=True)  # members leave only when done


def test_a_stopped_lbf_group_checkpoints_each_member_at_its_own_step_and_resumes(tmp_path, monkeypatch):
    """With members at different phases (LBF), a stop request checkpoints each member when it
    next completes a step of its own, at different env steps; what each logged up to its
    checkpoint is exactly the uninterrupted group's, and the resumed group finishes every member.
    (LBF's in-flight episodes restart on resume, as for a standalone run, so the rest is not
    compared bitwise: tests/test_resume.py.)"""
    run_group(_group(tmp_path, "ref", *LBF_UNEVEN))
    _stop_when_seed_0_reaches(700, monkeypatch)
    with pytest.raises(preemption.Preempted):
        run_group(_group(tmp_path, "run", *LBF_UNEVEN))
    preemption.clear()
    saved = [ckpt.load(tmp_path / "run" / f"m{s}" / ckpt.CHECKPOINT_FILE)["clock"]["env_steps"] for s in range(3)]
    assert saved[0] == 700 and len(set(saved)) > 1, saved
    for s in range(3):
        before = [r for r in records(tmp_path / "run" / f"m{s}") if r["env_steps"] <= saved[s]]
        assert before == [r for r in records(tmp_path / "ref" / f"m{s}") if r["env_steps"] <= saved[s]], s
    monkeypatch.undo()
    results = run_group(_group(tmp_path, "run", *LBF_UNEVEN))
    assert all(isinstance(r, dict) for r in results)
    assert [read_metrics(tmp_path / "run" / f"m{s}")[-1]["env_steps"] for s in range(3)] == [1500] * 3


# SMAX continues its in-flight battles bitwise after a resume (matrix games do too, but their
# episodes all last the same), and random 3m battles end at different steps for different members.
SMAX_UNEVEN = ("env=smax", "t_max=600", "learner.batch_size=4", "buffer.capacity=50", "eval.interval=600",
               "eval.episodes=2", "eval.num_envs=2", "logger.interval=10", "checkpoint.interval=600",
               "num_envs=1")


def _stop_when_seed_0_completes_beside_a_parked_member(env_steps: int, monkeypatch) -> list[int]:
    """A stop request once member seed 0 completes a step (at or after ``env_steps``) while another
    member is parked: that one takes its due gradient step in a round without seed 0 before it
    checkpoints, so the members are saved at different gradient steps and a resumed group pairs
    other steps in its rounds than the uninterrupted one. Returns seed 0's env step when it fired."""
    original = vector_experiment.collect_and_learn
    fired: list[int] = []

    def stopping(group, vector, live, fail, parked):
        completed = original(group, vector, live, fail, parked)
        if not fired and 0 in completed and parked and group[0].clock.env_steps >= env_steps:
            fired.append(group[0].clock.env_steps)
            preemption.request()
        return completed

    monkeypatch.setattr(vector_experiment, "collect_and_learn", stopping)
    return fired


def test_a_smax_group_stopped_out_of_phase_resumes_every_member_bitwise(tmp_path, monkeypatch):
    """A stop finds SMAX members in different phases: a parked member takes its gradient step
    without seed 0 before it checkpoints, and the resumed group pairs other steps in its rounds
    (and has other members alone) than the uninterrupted one. Every member still ends bitwise
    equal to the uninterrupted group, because a member's arithmetic does not depend on the others:
    batches padded to the episode limit, and a lone member computed beside a copy of itself
    (marl.vector_learner.VectorLearner)."""
    run_group(_group(tmp_path, "ref", *SMAX_UNEVEN))
    fired = _stop_when_seed_0_completes_beside_a_parked_member(300, monkeypatch)
    with pytest.raises(preemption.Preempted):
        run_group(_group(tmp_path, "run", *SMAX_UNEVEN))
    preemption.clear()
    saved = [ckpt.load(tmp_path / "run" / f"m{s}" / ckpt.CHECKPOINT_FILE)["clock"] for s in range(3)]
    assert saved[0]["env_steps"] == fired[0] and len({c["grad_steps"] for c in saved}) > 1, saved
    monkeypatch.undo()
    run_group(_group(tmp_path, "run", *SMAX_UNEVEN))
    for s in range(3):
        assert records(tmp_path / "run" / f"m{s}") == records(tmp_path / "ref" / f"m{s}"), f"member {s}"
        assert_same(final_state(tmp_path / "run" / f"m{s}"), final_state(tmp_path / "ref" / f"m{s}"), f"member {s}")
