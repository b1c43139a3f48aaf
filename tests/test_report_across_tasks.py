"""``python -m marl.report --aggregate``: algorithms compared across tasks (marl.report.across_tasks).

Run folders are made by hand (``config.yaml`` from :func:`marl.config.compose`, ``metrics.jsonl``
written here): two algorithms (qmix, vdn) on three tasks with four seeds each, plus a task that only
qmix ran and a task whose runs reached no evaluation. Every expected number below is computed by
hand in the comments, not by rliable.
"""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from marl.config import compose
from marl.report.aggregate import compare
from marl.report.across_tasks import (Bounds, compare_across_tasks, normalise, parse_bounds, task_bounds)
from marl.report.cli import main
from marl.report.random_policy import cache_key, random_return

METRIC = "eval/return_mean"
INTERVAL = 50000

# Final returns per task and algorithm, seeds 0..3. Every run evaluates twice: at 50000 (its final
# minus 1, except vdn seed 0 on penalty, which scores 10 there, the best return on that task) and at
# 100000 (its final). vdn seed 1 overshoots: 50003 and 100004 (a batched env).
FINALS = {
    "climbing": {"qmix": [2, 4, 6, 8], "vdn": [1, 3, 5, 10]},
    "penalty": {"qmix": [0, 5, -5, 0], "vdn": [-10, 0, 6, 2]},
    "nonmonotonic": {"qmix": [150, 190, 120, 200], "vdn": [110, 130, 170, 100]},
}
# Bounds: climbing 0:10 and nonmonotonic 100:200 given; penalty -10 given and its upper bound left to
# the default, the best evaluation of any run: 10 (vdn seed 0 at 50000), above every final return.
GIVEN = {"climbing": (0.0, 10.0), "penalty": (-10.0, None), "nonmonotonic": (100.0, 200.0), "two_step": (0.0, 1.0)}
# (final - low) / (high - low), by hand:
NORMALISED = {
    "climbing": {"qmix": [0.2, 0.4, 0.6, 0.8], "vdn": [0.1, 0.3, 0.5, 1.0]},
    "penalty": {"qmix": [0.5, 0.75, 0.25, 0.5], "vdn": [0.0, 0.5, 0.8, 0.6]},  # (x + 10) / 20
    "nonmonotonic": {"qmix": [0.5, 0.9, 0.2, 1.0], "vdn": [0.1, 0.3, 0.7, 0.0]},
}
# IQM over the 12 runs x tasks: drop the 3 lowest and the 3 highest, mean of the middle 6.
# qmix sorted: 0.2 0.2 0.25 | 0.4 0.5 0.5 0.5 0.6 0.75 | 0.8 0.9 1.0 -> 3.25 / 6
# vdn sorted:  0.0 0.0 0.1  | 0.1 0.3 0.3 0.5 0.5 0.6  | 0.7 0.8 1.0 -> 2.3 / 6
IQM = {"qmix": 3.25 / 6, "vdn": 2.3 / 6}
MEAN = {"qmix": (2.0 + 2.0 + 2.6) / 12, "vdn": (1.9 + 1.9 + 1.1) / 12}
# Median (rliable's): the median over tasks of each task's mean score.
# qmix task means 2.0/4, 2.0/4, 2.6/4 -> 0.5; vdn 1.9/4, 1.9/4, 1.1/4 -> 0.475
MEDIAN = {"qmix": 2.0 / 4, "vdn": 1.9 / 4}
# P(qmix > vdn): per task, over the 16 pairs (qmix run, vdn run), 1 if above, 1/2 if equal:
# climbing: 0.2>{0.1}: 1, 0.4: 2, 0.6: 3, 0.8: 3 -> 9/16
# penalty: 0.5>{0} and =0.5: 1.5, 0.75: 3, 0.25: 1, 0.5: 1.5 -> 7/16
# nonmonotonic: 0.5>{0.1,0.3,0}: 3, 0.9: 4, 0.2>{0.1,0}: 2, 1.0: 4 -> 13/16
# averaged over the tasks: (9 + 7 + 13) / 48
P_QMIX_OVER_VDN = 29 / 48


@functools.lru_cache(maxsize=None)
def composed(mixer: str) -> str:
    return OmegaConf.to_yaml(compose(["env=climbing", f"mixer={mixer}", f"eval.interval={INTERVAL}"]))


def make_run(folder: Path, mixer: str, env: dict, seed: int, evals: list[tuple[int, float]], final: bool = True,
             num_envs: int = 1) -> Path:
    folder.mkdir(parents=True)
    cfg = OmegaConf.create(composed(mixer))
    cfg.env, cfg.seed, cfg.num_envs = env, seed, num_envs
    OmegaConf.save(cfg, folder / "config.yaml")
    lines = []
    for steps, value in evals:
        lines.append({"env_steps": steps, "episodes": steps // 25, "grad_steps": steps // 25, "time": 1.0,
                      METRIC: float(value)})
    if final:
        lines.append({"env_steps": evals[-1][0], "episodes": 1, "grad_steps": 1, "time": 1.0, "final": 1.0})
    elif not evals:
        lines.append({"env_steps": 25, "episodes": 1, "grad_steps": 0, "time": 1.0, "train/return_mean": 0.0})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return folder


ENVS = {"climbing": {"name": "climbing", "episode_limit": 5}, "penalty": {"name": "penalty", "episode_limit": 5},
        "nonmonotonic": {"name": "nonmonotonic"}, "two_step": {"name": "two_step"},
        "mpe": {"name": "mpe", "scenario": "simple_spread"}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("across_tasks")
    for task, algos in FINALS.items():
        for mixer, finals in algos.items():
            for seed, final in enumerate(finals):
                first = 10 if (task, mixer, seed) == ("penalty", "vdn", 0) else final - 1
                steps = (50003, 100004) if (mixer, seed) == ("vdn", 1) else (50000, 100000)
                # penalty's runs use 8 envs: a setting that changes with the task only must not split an algorithm
                make_run(root / task / f"{mixer}_{seed}", mixer, ENVS[task], seed,
                         [(steps[0], first), (steps[1], final)], num_envs=8 if task == "penalty" else 1)
    for seed in range(2):  # a task that only qmix ran
        make_run(root / "two_step" / f"qmix_{seed}", "qmix", ENVS["two_step"], seed, [(50000, 0.5), (100000, 1.0)])
    for seed in range(2):  # a task whose runs stopped before their first evaluation
        make_run(root / "mpe" / f"qmix_{seed}", "qmix", ENVS["mpe"], seed, [], final=False)
    return root


@pytest.fixture(scope="module")
def result(runs: Path):
    comp = compare([runs], reps=200, curve_reps=50)
    bounds = task_bounds(comp, GIVEN, lambda table: pytest.fail(f"random policy measured for {table.label}"))
    return compare_across_tasks(comp, bounds, reps=300, curve_reps=100)


def test_normalisation_by_hand(result):
    tasks = {t.label: t for t in result.tasks}
    assert tasks["penalty"].bounds == Bounds(-10.0, 10.0, "--bounds", "best run")
    assert tasks["climbing"].bounds == Bounds(0.0, 10.0, "--bounds", "--bounds")
    for task, algos in NORMALISED.items():
        for algo, expected in algos.items():
            np.testing.assert_allclose(tasks[task].normalised[algo], expected, atol=1e-12, err_msg=f"{task} {algo}")
    assert normalise(np.array([-10.0, 10.0, 30.0]), Bounds(-10.0, 10.0, "", "")).tolist() == [0.0, 1.0, 2.0]


def test_aggregate_iqm_mean_median_and_gap_by_hand(result):
    assert [t.label for t in result.included] == ["climbing", "nonmonotonic", "penalty"]
    assert result.runs_per_task == {"qmix": 4, "vdn": 4}
    for algo in ("qmix", "vdn"):
        e = result.aggregates[algo]
        assert e["iqm"].value == pytest.approx(IQM[algo])
        assert e["mean"].value == pytest.approx(MEAN[algo])
        assert e["median"].value == pytest.approx(MEDIAN[algo])
        assert e["optimality_gap"].value == pytest.approx(1 - MEAN[algo])  # no score above 1 to clip
        for stat in e.values():
            assert stat.low <= stat.value <= stat.high and stat.high > stat.low


def test_probability_of_improvement_by_hand(result):
    [(x, y, p)] = result.improvement
    assert (x, y) == ("qmix", "vdn")  # ordered by aggregate IQM
    assert p.value == pytest.approx(P_QMIX_OVER_VDN)
    assert p.low < p.value < p.high


def test_profiles_and_curve_over_training(result):
    taus = result.taus
    value, low, high = result.profiles["vdn"]
    # vdn's 12 normalised scores strictly above 0.5: 1.0, 0.8, 0.6, 0.7 (its two 0.5s are not) -> 4/12
    assert value[list(taus).index(0.5)] == pytest.approx(4 / 12)
    assert np.all(low <= value + 1e-12) and np.all(value <= high + 1e-12)
    for algo, curve in result.curves.items():
        # vdn seed 1's 50003 and 100004 are snapped to the multiples of the interval: two common points
        assert curve.steps.tolist() == [50000.0, 100000.0]
        assert curve.iqm[-1] == pytest.approx(IQM[algo])  # the last evaluation is the final one
        assert curve.runs.tolist() == [4, 4]


def test_task_with_one_algorithm_is_said_and_left_out(result, runs, tmp_path):
    two_step = next(t for t in result.tasks if t.label == "two_step")
    assert two_step.excluded is not None and "only qmix" in two_step.excluded and "no vdn" in two_step.excluded
    np.testing.assert_allclose(two_step.normalised["qmix"], [1.0, 1.0])  # still normalised and shown
    out = tmp_path / "report"
    bounds = [f"--bounds={t}={'' if lo is None else lo}:{'' if hi is None else hi}" for t, (lo, hi) in GIVEN.items()]
    assert main([str(runs), "--out", str(out), "--aggregate", "--reps", "30", *bounds]) == 0
    md = (out / "report.md").read_text()
    assert "- task two_step: not in the aggregate: only qmix has runs here (no vdn)" in md
    rows = list(csv.DictReader(open(out / "normalised_runs.csv", newline="")))
    assert {r["in_aggregate"] for r in rows if r["task"] == "two_step"} == {"False"}
    aggregate = {r["algorithm"]: r for r in csv.DictReader(open(out / "aggregate.csv", newline=""))}
    assert float(aggregate["qmix"]["iqm"]) == pytest.approx(IQM["qmix"])
    assert aggregate["qmix"]["tasks"] == "climbing nonmonotonic penalty"
    for png in ("aggregate_intervals", "performance_profiles", "probability_of_improvement", "aggregate_curves"):
        assert (out / f"{png}.png").read_bytes()[:4] == b"\x89PNG" and f"]({png}.png)" in md


def test_task_without_evaluations_is_said(result):
    mpe = next(t for t in result.tasks if t.label == "mpe")
    assert mpe.excluded == "no run reached an evaluation (2 runs, 0 failed)"


def test_one_algorithm_only_gives_aggregates_without_improvement(runs):
    comp = compare([runs / "two_step"], reps=50, curve_reps=20)
    only = compare_across_tasks(comp, task_bounds(comp, {"two_step": (0.0, 1.0)}, lambda t: 0.0), reps=50,
                                curve_reps=20)
    assert [a.label for a in only.algorithms] == ["qmix"] and only.improvement == []
    assert only.aggregates["qmix"]["iqm"].value == pytest.approx(1.0)


def test_bad_bounds_are_one_line_errors(runs, tmp_path, capsys):
    climbing = [str(runs / "climbing"), "--out", str(tmp_path), "--aggregate"]
    assert main([*climbing, "--bounds", "climbing=0-10"]) == 2  # said before any run is read
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "climbing=0-10" in err and "TASK=LOW:HIGH" in err
    assert main([*climbing, "--bounds", "lbf=0:1", "--reps", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "lbf" in err and "climbing" in err
    assert parse_bounds(["mpe=-80:", "a=b=1:2"]) == {"mpe": (-80.0, None), "a=b": (1.0, 2.0)}


def test_random_policy_return_is_measured_seeded_and_cached(tmp_path, monkeypatch):
    env = {"name": "climbing", "episode_limit": 5}
    cache = tmp_path / "random_returns.json"
    value = random_return(env, cache, episodes=200, label="climbing")
    # Uniform play of the climbing matrix [[11,-30,0],[-30,7,0],[0,6,5]]: mean payoff -31/9 per step.
    # Payoff variance 2031/9 - (31/9)^2 = 213.8 per step, so over 5 steps and 200 episodes the
    # standard error is sqrt(5 * 213.8 / 200) = 2.3: allow 4 of them.
    assert value == pytest.approx(5 * -31 / 9, abs=4 * 2.3)
    assert random_return(env, None, episodes=200) == value  # seeded: the same number when measured again
    entry = json.loads(cache.read_text())[cache_key(env, 200, 0)]
    assert entry["return_mean"] == value and entry["task"] == "climbing" and entry["env"] == env
    monkeypatch.setattr("marl.report.random_policy.measure", lambda *a, **k: pytest.fail("measured again"))
    assert random_return(env, cache, episodes=200) == value  # read from the cache
    assert cache_key(env, 100, 0) != cache_key(env, 200, 0) != cache_key({**env, "episode_limit": 6}, 200, 0)


def test_random_policy_on_an_unknown_env_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match=r"task nowhere: .*--bounds nowhere=LOW:"):
        random_return({"name": "nowhere"}, tmp_path / "c.json", label="nowhere")


def test_intervals_repeat_for_a_seed_and_leave_the_global_rng_alone():
    # rliable resamples with numpy's global RNG whatever random_state it is given; the report seeds it
    from marl.report.across_tasks import _aggregates

    scores = {"a": np.random.default_rng(0).normal(size=(5, 3)), "b": np.random.default_rng(1).normal(size=(5, 3))}
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first, second = _aggregates(scores, 200, 0), _aggregates(scores, 200, 0)
    assert first == second
    assert _aggregates(scores, 200, 1) != first  # another bootstrap seed, other intervals
    assert (np.random.get_state()[1] == before).all()
