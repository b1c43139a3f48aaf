"""``python -m marl.evaluate``: trained runs evaluated again from their checkpoints, and rendered.

* the two-step game (the QMIX paper's setting, from the shared ``sweep_two_step``): each QMIX run
  evaluates to 8 and each VDN run to 7 from its checkpoint, and every file of the run folder is
  byte-identical afterwards apart from ``evaluations/``;
* a sweep folder gives one row per experiment, grouped and labelled as ``marl.report`` does, with
  the mean over seeds and a CI over seeds;
* a live run (its lock held) is evaluated from its newest checkpoint and keeps its lock;
* bad input (no checkpoint, a damaged checkpoint, an env that cannot render, an unknown render
  extension) is one line and exit status 2;
* renders: a matrix game, LBF and MPE to GIF and MP4, one frame per state (T + 1) and frames that change.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from marl import evaluate
from marl.checkpoint import CHECKPOINT_FILE, PREVIOUS_FILE
from marl.experiment import run
from marl.report.aggregate import compare
from marl.report.stats import mean_and_iqm

from helpers import run_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ("learner.batch_size=4", "buffer.capacity=16", "eval.episodes=2", "eval.num_envs=2", "num_envs=2",
        "eval.interval=1000000", "logger.interval=1000000")


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` except the evaluation's own."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and evaluate.EVALUATIONS_DIR not in p.parts}


def one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith("marl.evaluate:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def two_step(sweep_two_step, tmp_path_factory) -> Path:
    """A copy of the shared two-step sweep (QMIX and VDN, seeds 0-2), so other tests see it unchanged."""
    out = tmp_path_factory.mktemp("evaluate") / "sweep"
    shutil.copytree(sweep_two_step.path, out, ignore=shutil.ignore_patterns("wandb", "report"))
    return out


def run_of(sweep: Path, mixer: str, seed: int) -> Path:
    (found,) = [d for d in sweep.iterdir() if d.name.endswith(f"mixer={mixer},seed={seed}")]
    return found


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    """A few-second run on each env whose renders the tests check (the weights barely trained)."""
    out, runs = tmp_path_factory.mktemp("tiny"), {}
    for name, overrides in {"two_step": ("env=two_step", "t_max=200"),
                            "lbf": ("env=lbf", "t_max=200"), "mpe": ("env=mpe", "t_max=100"),
                            "tinygym": ("env=gymnasium", "env.factory=custom_envs:TinyGym", "t_max=100")}.items():
        run(run_config(out / name, *TINY, *overrides))
        runs[name] = out / name
    return runs


@pytest.mark.parametrize("mixer, expected", [("qmix", 8.0), ("vdn", 7.0)])
def test_two_step_evaluates_from_its_checkpoint_and_leaves_the_run_folder_unchanged(two_step, mixer, expected,
                                                                                     capsys):
    for seed in (0, 1, 2):
        run_dir = run_of(two_step, mixer, seed)
        before = digest(run_dir)
        assert evaluate.main([str(run_dir), "--episodes", "8", "--reps", "200"]) == 0
        assert digest(run_dir) == before  # config, metrics, checkpoints, seeds, lock, .hydra: all as they were
        (record,) = [json.loads(line) for line in (run_dir / "evaluations" / "evaluations.jsonl").open()]
        assert record["returns"] == [expected] * 8 and record["return_mean"] == expected
        assert record["checkpoint"]["episodes"] == 600
    out = capsys.readouterr().out
    assert f"{expected:.2f} [{expected:.2f}, {expected:.2f}]" in out


def test_a_sweep_gives_one_row_per_experiment_grouped_as_the_report_groups(two_step, capsys):
    assert evaluate.main([str(two_step), "--episodes", "4", "--epsilon", "0.5", "--reps", "500"]) == 0
    out = capsys.readouterr().out
    runs, _ = evaluate.find([two_step])
    results = [evaluate.evaluate_run(r, evaluate.Options(episodes=4, epsilon=0.5, reps=500), len(runs)) for r in runs]
    rows = evaluate.experiment_rows(results, reps=500)
    report = compare([two_step], reps=50, curve_reps=10)
    (table,) = report.tables
    assert sorted((row.env, row.label) for row in rows) == sorted((table.label, r.label) for r in table.rows)
    for row in rows:
        (same,) = [r for r in table.rows if r.label == row.label]
        assert sorted(str(r.path) for r in same.runs) == sorted(str(m.run.path) for m in row.results)
        assert len(row.results) == 3  # seeds 0-2
        means = [float(np.mean(m.returns)) for m in row.results]
        assert row.ret == mean_and_iqm({"x": np.array(means)}, reps=500)["x"]["mean"]  # a CI over seeds
        assert row.ret.value == pytest.approx(np.mean(means))
        # Every run plays the same episodes and ε draws (--seed), so greedy-identical seeds tie exactly,
        # while a run's own CI over its episodes is wide at ε = 0.5.
        assert all(m.ret.low < m.ret.high for m in row.results)
        assert f"{row.env}  {row.label}" in out
    assert out.count("two_step  ") >= 2  # one experiment row per mixer


def test_a_live_run_keeps_its_lock_and_stays_resumable(tiny_runs, tmp_path, capsys):
    from marl.runlock import RunLock

    run_dir = tmp_path / "live"
    shutil.copytree(tiny_runs["two_step"], run_dir)
    lock = RunLock(run_dir, 0)  # as the training process holds it
    try:
        lock_text = (run_dir / "run.lock").read_text()
        assert evaluate.main([str(run_dir), "--episodes", "2", "--reps", "50"]) == 0
        assert "(live)" in capsys.readouterr().out
        assert (run_dir / "run.lock").read_text() == lock_text
        probe = subprocess.run([sys.executable, "-c", "import sys; from marl.runlock import RunLock; "
                                f"RunLock(sys.argv[1], 0)", str(run_dir)], capture_output=True, text=True)
        assert probe.returncode != 0 and "in use by another process" in probe.stderr  # still ours
    finally:
        lock.release()
    metrics = (run_dir / "metrics.jsonl").read_bytes()
    cfg = run_config(run_dir, *TINY, "env=two_step", "t_max=220")
    assert run(cfg)  # resumes from the checkpoint the evaluation read and finishes
    assert (run_dir / "metrics.jsonl").read_bytes().startswith(metrics.split(b'{"final"')[0])


def test_a_folder_without_a_checkpoint_is_one_line(tiny_runs, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_runs["two_step"], run_dir, ignore=shutil.ignore_patterns("checkpoint*.pt"))
    assert evaluate.main([str(run_dir)]) == 2
    one_line_error(capsys, str(run_dir), "has no checkpoint")
    assert evaluate.main([str(tmp_path / "nothing")]) == 2
    one_line_error(capsys, "nothing", "is not a folder")
    # As a user sees it: one line on stderr, nothing on stdout, exit status 2.
    proc = subprocess.run([sys.executable, "-m", "marl.evaluate", str(run_dir)], capture_output=True, text=True)
    assert proc.returncode == 2 and not proc.stdout
    assert proc.stderr.strip().splitlines() == [f"marl.evaluate: {run_dir} has no checkpoint "
                                                f"({CHECKPOINT_FILE}): the run saved none yet (it writes one every "
                                                "checkpoint.interval and at its end); nothing to evaluate"]


def test_a_damaged_checkpoint_is_one_line_and_a_good_previous_one_is_used(tiny_runs, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_runs["two_step"], run_dir)
    newest = run_dir / CHECKPOINT_FILE
    good = newest.read_bytes()
    newest.write_bytes(b"\x00garbage" * 100)
    assert evaluate.main([str(run_dir), "--episodes", "2", "--reps", "50"]) == 2
    one_line_error(capsys, f"{newest} is unreadable", "no older checkpoint")
    (run_dir / PREVIOUS_FILE).write_bytes(good)
    assert evaluate.main([str(run_dir), "--episodes", "2", "--reps", "50"]) == 0
    assert f"Resuming from the previous checkpoint {run_dir / PREVIOUS_FILE}" in capsys.readouterr().err


def test_an_env_that_cannot_render_and_an_unknown_extension_are_one_line(tiny_runs, tmp_path, capsys):
    run_dir = tiny_runs["tinygym"]
    assert evaluate.main([str(run_dir), "--render", "--episodes", "2"]) == 2
    one_line_error(capsys, "env.name='gymnasium' cannot render", "rgb_array")
    before = digest(tiny_runs["two_step"])
    assert evaluate.main([str(tiny_runs["two_step"]), "--render", str(tmp_path / "out.avi")]) == 2
    one_line_error(capsys, "out.avi", "unknown extension '.avi'", ".gif, .mp4")
    assert digest(tiny_runs["two_step"]) == before and not list(tmp_path.iterdir())


def frames_of(path: Path) -> list[np.ndarray]:
    import imageio.v3 as iio

    return list(iio.imiter(path))


def check_frames(path: Path, length: int) -> list[np.ndarray]:
    """The file opens, has one frame per state of the episode (T steps: T + 1) and its frames change."""
    frames = frames_of(path)
    assert len(frames) == length + 1, (path, len(frames), length)
    assert len({f.shape for f in frames}) == 1
    changed = sum(not np.array_equal(a, b) for a, b in zip(frames, frames[1:]))
    assert changed == length  # the caption alone (step, return) changes on every frame
    return frames


def display_or_skip() -> None:
    import os

    if not os.environ.get("DISPLAY") and shutil.which("Xvfb") is None:
        pytest.skip("LBF renders through pyglet: needs DISPLAY or Xvfb (apt-get install xvfb)")


@pytest.mark.parametrize("env", ["two_step", "mpe", "lbf"])
@pytest.mark.parametrize("ext", ["gif", "mp4"])
def test_renders_have_one_frame_per_state_and_change(tiny_runs, tmp_path, env, ext):
    """ε = 0.5 so that the barely trained agents move (the greedy ones may stand still)."""
    if env == "lbf":
        display_or_skip()
    out = tmp_path / f"episode.{ext}"
    assert evaluate.main([str(tiny_runs[env]), "--render", str(out), "--epsilon", "0.5", "--episodes", "1",
                          "--reps", "20"]) == 0
    record = json.loads((tiny_runs[env] / "evaluations" / "evaluations.jsonl").read_text().splitlines()[-1])
    (rendered,) = record["renders"]
    assert rendered["path"] == str(out)
    length = rendered["length"]
    assert length == {"two_step": 2, "mpe": 25}.get(env, length) and 1 <= length <= 50  # MPE: always 25 steps
    frames = check_frames(out, length)
    if env != "two_step":  # the env's own picture changes too, not only the caption
        h = frames[0].shape[0] * 3 // 4
        assert any(not np.array_equal(frames[0][:h], f[:h]) for f in frames[1:])


def test_default_render_goes_into_the_run_folders_evaluations(tiny_runs, capsys):
    run_dir = tiny_runs["two_step"]
    assert evaluate.main([str(run_dir), "--render", "--render-episodes", "2", "--episodes", "2", "--reps", "20"]) == 0
    files = sorted((run_dir / "evaluations").glob("episode-*.gif"))
    assert [f.name.split("_")[0] for f in files] == ["episode-0", "episode-1"]
    for f in files:
        check_frames(f, 2)  # the two-step game: 2 steps, 3 frames


def test_training_renders_greedy_episodes_at_its_interval_into_the_run_folder_and_wandb(tmp_path):
    """``render.interval=100``: a GIF at env steps 100 and 200 in ``renders/`` and as W&B (offline)
    videos; the run learns exactly as without renders (same losses, same returns)."""
    from marl.config import compose

    def train(run_dir: Path, *extra: str) -> list[dict]:
        run(compose([f"run_dir={run_dir}", "logger.console=false", *TINY, "env=two_step", "t_max=200",
                     "logger.interval=50", *extra]))
        return [{k: v for k, v in r.items() if k not in ("time", "steps_per_sec")}
                for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]

    rendered = train(tmp_path / "on", "render.interval=100", "logger.wandb.mode=offline")
    files = sorted((tmp_path / "on" / "renders").glob("*"))
    assert [f.name for f in files] == ["env_steps=000000100.gif", "env_steps=000000200.gif"]
    for f in files:
        check_frames(f, 2)
    videos = list((tmp_path / "on" / "wandb").rglob("media/videos/**/*.gif"))
    assert len(videos) == 2, list((tmp_path / "on" / "wandb").rglob("*"))
    assert rendered == train(tmp_path / "off", "logger.wandb.mode=disabled")


def test_training_render_of_an_env_that_cannot_render_is_refused_at_start_up(tmp_path):
    from marl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"env.name='gymnasium' cannot render") as err:
        run(run_config(tmp_path / "run", *TINY, "env=gymnasium", "env.factory=custom_envs:TinyGym", "t_max=100",
                       "render.interval=50"))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # refused before the first step
    with pytest.raises(ConfigError, match=r"render.format='avi' is invalid: choose one of gif, mp4"):
        run(run_config(tmp_path / "run2", *TINY, "env=two_step", "render.interval=50", "render.format=avi"))
