"""``python -m marl.report``: mixers compared across seeds on a real sweep (tests/conftest_report.py)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from marl import report
from marl.report.labels import group_labels
from marl.report.runs import find_runs
from marl.report.stats import iqm_per_point, learning_curve, mean_and_iqm

from conftest_report import ROOT, SWEEP_SEEDS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def cli_report(sweep_two_step, tmp_path_factory):
    """The report over the sweep, made by the command a user types."""
    out = tmp_path_factory.mktemp("report")
    proc = subprocess.run([sys.executable, "-m", "marl.report", str(sweep_two_step.path), "--out", str(out),
                           "--marl-eval"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


def test_qmix_above_vdn_with_separate_intervals(cli_report):
    out, _ = cli_report
    rows = {r["mixer"]: r for r in read_csv(out / "summary.csv")}
    assert set(rows) == {"qmix", "vdn"}
    qmix, vdn = rows["qmix"], rows["vdn"]
    for row in (qmix, vdn):
        assert row["env"] == "two_step" and row["status"] == "complete" and int(row["n_seeds"]) == len(SWEEP_SEEDS)
    # the paper's result: QMIX greedy return 8, VDN 7, on every seed
    assert float(qmix["final_mean"]) == pytest.approx(8.0) and float(vdn["final_mean"]) == pytest.approx(7.0)
    for agg in ("mean", "iqm"):
        assert float(qmix[f"final_{agg}_ci_low"]) > float(vdn[f"final_{agg}_ci_high"]), (qmix, vdn)
        assert float(qmix[f"final_{agg}_ci_low"]) <= float(qmix[f"final_{agg}"]) <= float(qmix[f"final_{agg}_ci_high"])


def test_table_is_printed_and_written(cli_report):
    out, stdout = cli_report
    md = (out / "report.md").read_text()
    assert md in stdout
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| experiment | seeds |") and "final IQM [95% CI]" in lines[0]
    assert lines[1].startswith("| qmix | 3 | 1200 | 8.00 [8.00, 8.00] |")  # sorted by final IQM
    assert lines[2].startswith("| vdn | 3 | 1200 | 7.00 [7.00, 7.00] |")
    assert "![two_step](curves_two_step.png)" in md
    assert "Unfinished" not in md and "Missing" not in md
    runs = read_csv(out / "runs.csv")
    assert len(runs) == 6 and {r["status"] for r in runs} == {"complete"}


def test_learning_curve_png_is_a_real_image(cli_report):
    import matplotlib.image

    png = cli_report[0] / "curves_two_step.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE and png.stat().st_size > 10_000
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] >= 300 and image.shape[1] >= 500 and image.shape[2] in (3, 4)
    assert image[..., :3].std() > 0.05  # lines and bands, not a blank canvas


def test_marl_eval_json(cli_report):
    data = json.loads((cli_report[0] / "marl_eval.json").read_text())
    algos = data["two_step"]["two_step"]
    assert set(algos) == {"qmix", "vdn"}
    for name, final in (("qmix", 8.0), ("vdn", 7.0)):
        assert set(algos[name]) == {f"seed_{s}" for s in SWEEP_SEEDS}
        for run in algos[name].values():
            steps = [v for k, v in run.items() if k.startswith("step_")]
            assert [s["step_count"] for s in steps] == list(range(200, 1201, 200))
            assert all(len(s["return"]) == 1 for s in steps)
            assert run["absolute_metrics"] == {"return": [final]}


def test_report_names_unfinished_failed_and_missing_runs(sweep_two_step, tmp_path):
    """A sweep with a run that stopped early, one that failed at start and one never started."""
    sweep = tmp_path / "sweep"
    shutil.copytree(sweep_two_step.path, sweep, ignore=shutil.ignore_patterns("wandb", "checkpoint.pt", "report"))
    stopped = next(sweep.glob("*_mixer=vdn,seed=1"))
    lines = (stopped / "metrics.jsonl").read_text().splitlines()
    (stopped / "metrics.jsonl").write_text("\n".join(lines[:4]) + '\n{"env_steps": 10')  # torn last line
    failed = next(sweep.glob("*_mixer=qmix,seed=2"))
    (failed / "config.yaml").unlink()
    (failed / "metrics.jsonl").unlink()
    shutil.rmtree(next(sweep.glob("*_mixer=vdn,seed=2")))

    assert report.main([str(sweep)]) == 0
    md = (sweep / "report" / "report.md").read_text()
    assert f"{stopped} (vdn, seed 1): no final record: stopped at" in md
    assert f"{failed}: failed before training started" in md
    assert "mixer=vdn,seed=2 (no run folder" in md
    rows = {r["mixer"]: r for r in read_csv(sweep / "report" / "summary.csv")}
    assert rows["qmix"]["seeds"] == "0 1" and rows["vdn"]["seeds"] == "0"  # the finished runs only
    assert float(rows["qmix"]["final_mean"]) == 8.0 and float(rows["vdn"]["final_mean"]) == 7.0


def test_runs_of_an_earlier_command_of_the_same_sweep_are_not_missing(sweep_two_step, tmp_path):
    """A sweep relaunched with one more fixed override (``num_envs=1``, say) names the same jobs: its
    earlier runs, whose overrides lack it, are found by their swept values; a lost run is still missing."""
    sweep = tmp_path / "sweep"
    shutil.copytree(sweep_two_step.path, sweep, ignore=shutil.ignore_patterns("wandb", "checkpoint.pt", "report"))
    multirun = OmegaConf.load(sweep / "multirun.yaml")
    multirun.hydra.overrides.task.append("num_envs=1")
    OmegaConf.save(multirun, sweep / "multirun.yaml")
    shutil.rmtree(next(sweep.glob("*_mixer=qmix,seed=1")))

    runs, missing = find_runs([sweep])
    assert len(runs) == 5
    assert [m.split(": ", 1)[1] for m in missing] == ["mixer=qmix,seed=1 (no run folder: not started yet, or lost)"]


def test_group_with_only_unfinished_runs_is_in_progress(sweep_two_step, tmp_path):
    run = tmp_path / "vdn_running"
    shutil.copytree(next(sweep_two_step.path.glob("*_mixer=vdn,seed=0")), run,
                    ignore=shutil.ignore_patterns("wandb", "checkpoint.pt"))
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(line for line in lines if '"final"' not in line) + "\n")
    comp = report.compare([run])
    (row,) = comp.tables[0].rows
    assert row.in_progress and "(in progress)" in report.to_markdown(comp)


def test_experiments_are_labelled_by_what_differs(tmp_path):
    base = {"mixer": {"name": "qmix", "embed_dim": 32}, "learner": {"lr": 0.0005}, "t_max": 10}
    labels = group_labels({
        "a": base,
        "b": {**base, "mixer": {"name": "vdn"}},
        "c": {**base, "learner": {"lr": 0.001}},
        "d": {**base, "mixer": {"name": "qmix", "embed_dim": 8}},
    })
    assert labels["b"] == "vdn (learner.lr=0.0005)"
    assert labels["a"] == "qmix (mixer.embed_dim=32, learner.lr=0.0005)"
    assert labels["c"] == "qmix (mixer.embed_dim=32, learner.lr=0.001)"


def test_cli_errors(tmp_path, capsys):
    assert report.main([str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert report.main([str(tmp_path)]) == 1
    assert "no runs" in capsys.readouterr().err


def test_wandb_flag_offline_says_why_and_the_report_object_builds(sweep_two_step, tmp_path, monkeypatch, capsys):
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    from marl.report.publish import build_report, publish, unsynced_offline_runs

    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    comp = report.compare([sweep_two_step.path], reps=200, curve_reps=100)
    assert publish(comp) is None
    assert "no W&B Report was published" in capsys.readouterr().err
    assert len(unsynced_offline_runs(comp)) == 6
    built = build_report(comp, entity="someone", project="marl", title="t")
    assert isinstance(built, wr.Report)
    grids = [b for b in built.blocks if isinstance(b, wr.PanelGrid)]
    assert len(grids) == 1 and grids[0].runsets[0].groupby == ["config.mixer.name"]
    assert grids[0].panels[0].x == "env_steps" and grids[0].panels[0].y == ["eval/return_mean"]
    ids = sorted((d / "wandb_id.txt").read_text().strip() for d in sweep_two_step.path.glob("*_mixer=*"))
    assert expr.expr_to_filters(grids[0].runsets[0].filters).value == ids  # exactly the compared runs


def test_statistics_come_from_rliable():
    from rliable import metrics

    scores = np.random.default_rng(0).normal(size=(7, 1, 5))
    per_point = [metrics.aggregate_iqm(scores[..., i]) for i in range(scores.shape[-1])]
    assert np.allclose(iqm_per_point(scores), per_point)
    est = mean_and_iqm({"a": np.array([1.0, 2.0, 3.0, 4.0, 100.0])}, reps=500)["a"]
    assert est["mean"].value == pytest.approx(22.0) and est["iqm"].value == pytest.approx(3.0)
    assert est["mean"].low < est["mean"].value < est["mean"].high
    curve = learning_curve([[(0, 0.0), (10, 1.0), (20, 2.0)], [(0, 0.0), (10, 3.0)]], reps=200)
    assert list(curve.runs) == [2, 2, 1] and curve.iqm[2] == pytest.approx(2.0)


def test_report_grouping_ignores_bookkeeping(sweep_two_step):
    runs, missing = find_runs([sweep_two_step.path])
    assert not missing and len(runs) == 6 and all(r.complete for r in runs)
    assert len({r.key for r in runs}) == 2
    cfg = OmegaConf.to_container(OmegaConf.load(runs[0].path / "config.yaml"))
    assert cfg["run_dir"].startswith("${hydra:")  # saved unresolved, yet grouped fine
