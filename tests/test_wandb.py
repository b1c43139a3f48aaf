"""W&B runs that compare cleanly, read back with W&B's own reader (``wandb leet inspect --json``).

No mocks: a real local sweep logs six offline W&B runs (tests/conftest_report.py) and each test
reads what W&B stored in the ``.wandb`` transaction logs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from marl import experiment
from marl.config import compose
from marl.logger import WANDB_ID_FILE, wandb_mode
from marl.report.runs import find_runs, read_records
from marl.wandb_naming import experiment_key, wandb_identity

from conftest_report import SWEEP_SEEDS

WANDB = [sys.executable, "-m", "wandb"]


def inspect_records(*offline_dirs: Path) -> list[list[dict]]:
    """Every record of each run's .wandb log, as W&B's own reader prints it (the runs read in parallel)."""
    procs = [subprocess.Popen([*WANDB, "leet", "inspect", "--json", str(d)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for d in offline_dirs]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        out.append([json.loads(line) for line in stdout.splitlines() if line.strip()])
    return out


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


@pytest.fixture(scope="module")
def stored(sweep_two_step):
    """For each run folder of the sweep: its W&B run record, history rows and exit record."""
    run_dirs = sorted(p for p in sweep_two_step.path.iterdir() if (p / "metrics.jsonl").exists())
    assert all(len(offline_runs(d)) == 1 for d in run_dirs)
    out = {}
    for run_dir, records in zip(run_dirs, inspect_records(*(offline_runs(d)[0] for d in run_dirs))):
        (run,) = [r["run"] for r in records if r["type"] == "run"]
        out[run_dir] = {"run": run, "history": [r["history"]["item"] for r in records if r["type"] == "history"],
                        "metrics": [r["metric"] for r in records if r["type"] == "metric"],
                        "exit": [r["exit"] for r in records if r["type"] == "exit"]}
    return out


def test_sweep_gives_six_offline_runs_in_two_groups(stored):
    assert len(stored) == 6
    groups = defaultdict(set)
    for run_dir, s in stored.items():
        run, config = s["run"], s["run"]["config"]["update"]
        assert [e["exit_code"] for e in s["exit"]] == [0]  # finished cleanly
        assert run["run_id"] == (run_dir / WANDB_ID_FILE).read_text().strip()
        assert run["project"] == "marl"
        groups[run["run_group"]].add((config["mixer"]["name"], config["seed"]))
        assert run["display_name"] == f"two_step-{config['mixer']['name']}-seed{config['seed']}"
        assert run["job_type"] == config["mixer"]["name"]
        assert set(run["tags"]) == {"two_step", config["mixer"]["name"]}
    assert len(groups) == 2, groups
    for group, members in groups.items():
        mixers = {m for m, _ in members}
        assert len(mixers) == 1 and sorted(s for _, s in members) == list(SWEEP_SEEDS), (group, members)
        # readable: env, mixer and the sweep's overrides minus the seed, then the experiment hash
        assert group.startswith(f"two_step-{mixers.pop()}-") and "seed" not in group
        assert "preset=two_step_paper" in group and "t_max=600" in group


def test_config_is_the_full_resolved_config(stored, sweep_two_step):
    for run_dir, s in stored.items():
        config = s["run"]["config"]["update"]
        # nested dicts: W&B shows and groups them as dotted keys (mixer.name, env.name)
        assert config["env"]["name"] == "two_step" and config["mixer"]["name"] in ("qmix", "vdn")
        assert config["t_max"] == 600 and config["t_max_unit"] == "episodes"  # enums as their values
        assert config["eval"]["interval"] == 100 and config["learner"]["optimizer"] == "rmsprop"
        assert config["run_dir"] == str(run_dir)  # resolved, not ${hydra:...}
        if config["mixer"]["name"] == "qmix":
            assert config["mixer"]["embed_dim"] == 8  # the preset's mixer value is there too


def test_history_is_on_the_env_step_axis_and_matches_metrics_jsonl(stored):
    for run_dir, s in stored.items():
        assert {"name": "env_steps", "options": {"defined": True}} in s["metrics"]
        assert any(m.get("glob_name") == "*" and m.get("step_metric") == "env_steps" for m in s["metrics"])
        local = read_records(run_dir / "metrics.jsonl")
        assert len(s["history"]) == len(local)
        assert all("env_steps" in h and "episodes" in h and "grad_steps" in h for h in s["history"])
        evals = [(h["env_steps"], h["eval/return_mean"]) for h in s["history"] if "eval/return_mean" in h]
        assert evals == [(r["env_steps"], r["eval/return_mean"]) for r in local if "eval/return_mean" in r]
        assert evals[-1][0] == 1200  # 600 two-step episodes


def test_report_groups_are_the_wandb_groups(stored, sweep_two_step):
    """The report's experiments (config minus seed) and W&B's groups are the same sets of runs."""
    runs, _ = find_runs([sweep_two_step.path])
    for run in runs:
        assert wandb_identity(OmegaConf.create(run.config), run_dir=run.path)["group"] == \
            stored[run.path]["run"]["run_group"]
        assert stored[run.path]["run"]["run_group"].endswith(run.key)


def test_sweep_end_prints_folder_report_and_sync_commands(sweep_two_step):
    out = sweep_two_step.stdout
    assert f"Sweep folder: {sweep_two_step.path}" in out
    assert f"python -m marl.report {sweep_two_step.path}" in out
    assert f"wandb sync {sweep_two_step.path}/*/wandb/offline-run-*" in out


def test_same_experiment_same_key_other_settings_other_key(tmp_path):
    a = compose(["mixer=qmix", "seed=0", f"run_dir={tmp_path}/a"])
    b = compose(["mixer=qmix", "seed=7", f"run_dir={tmp_path}/b", "logger.wandb.mode=offline", "threads=2"])
    c = compose(["mixer=qmix", "seed=0", f"run_dir={tmp_path}/a", "learner.lr=0.001"])
    assert experiment_key(a) == experiment_key(b) != experiment_key(c)
    ident = wandb_identity(a)
    assert ident["group"] == f"two_step-qmix-{experiment_key(a)}"  # no overrides file outside Hydra
    assert ident["name"] == "two_step-qmix-seed0" and ident["job_type"] == "qmix"
    long = compose(["mixer=qmix", f"run_dir={tmp_path}/a", "logger.wandb.tags=[x]"])
    assert wandb_identity(long)["tags"] == ["two_step", "qmix", "x"]


def test_resumed_run_continues_its_wandb_run(tmp_path):
    run_dir = tmp_path / "run"
    overrides = ["preset=two_step_paper", "mixer=vdn", "logger.wandb.mode=offline", "logger.console=false",
                 f"run_dir={run_dir}"]
    experiment.run(compose([*overrides, "t_max=40"]))
    run_id = (run_dir / WANDB_ID_FILE).read_text().strip()
    experiment.run(compose([*overrides, "t_max=80"]))  # the folder has a checkpoint: this resumes it
    assert (run_dir / WANDB_ID_FILE).read_text().strip() == run_id
    parts = offline_runs(run_dir)
    # W&B names a second offline folder of the same run in the same second "<...>-<id>-1"
    assert len(parts) == 2 and all(re.search(rf"-{run_id}(-\d+)?$", p.name) for p in parts)
    logs = inspect_records(*parts)
    assert {r["run"]["run_id"] for log in logs for r in log if r["type"] == "run"} == {run_id}
    # the second part continues on the env-step axis where the first stopped
    steps = [[r["history"]["item"]["env_steps"] for r in log if r["type"] == "history"] for log in logs]
    assert steps[0][-1] == 80 and steps[1][-1] == 160 and min(steps[1]) >= 80


def test_wandb_failure_does_not_stop_training(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "wandb").write_text("not a folder: W&B cannot create its run directory here")
    result = experiment.run(compose(["preset=two_step_paper", "t_max=40", "logger.wandb.mode=offline",
                                     "logger.console=false", f"run_dir={run_dir}"]))
    assert "eval/return_mean" in result
    assert any("final" in r for r in read_records(run_dir / "metrics.jsonl"))
    assert "W&B start failed, continuing without it" in capsys.readouterr().err


def test_auto_mode_is_offline_at_once_without_a_key(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_BASE_URL", "https://10.255.255.1")  # would hang if it were contacted
    start = time.perf_counter()
    assert wandb_mode("auto") == "offline"
    assert time.perf_counter() - start < 0.5
    assert wandb_mode("disabled") == "disabled" and wandb_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode("auto") == "disabled"


def test_disabled_mode_writes_no_wandb_files(tmp_path):
    run_dir = tmp_path / "run"
    experiment.run(compose(["preset=two_step_paper", "t_max=40", "logger.wandb.mode=disabled",
                            "logger.console=false", f"run_dir={run_dir}"]))
    assert not (run_dir / "wandb").exists() and not (run_dir / WANDB_ID_FILE).exists()
