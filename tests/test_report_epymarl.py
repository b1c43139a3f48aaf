"""EPyMARL's metrics in ``python -m marl.report``: maximum and average return, and ``--per-agent``.

Run folders are made by hand (``config.yaml`` from :func:`marl.config.compose`, ``metrics.jsonl``
lines written here) so that every expected number is computed by hand below.
"""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from marl import report
from marl.config import compose
from marl.report.runs import load_run, n_agents, return_divisor
from marl.report.stats import evaluation_points, maximum_over_seeds

METRIC = "eval/return_mean"
INTERVAL = 50000

# Three seeds of one experiment, evaluated every 50k env steps by a batched env that overshoots:
# seed 1 at 50003/100004/150002, seed 2 at 50001/100000 (one evaluation fewer: still running).
CURVES = {
    0: [(50000, 1.0), (100000, 5.0), (150000, 3.0)],
    1: [(50003, 3.0), (100004, 2.0), (150002, 7.0)],
    2: [(50001, 2.0), (100000, 5.0)],
}
# By hand. Points (env_steps // 50000): 1, 2, 3 for seeds 0 and 1; 1, 2 for seed 2.
# Mean over seeds at point 1: (1+3+2)/3 = 2; at point 2: (5+2+5)/3 = 4; point 3 is reached by two
# seeds only, so it is no candidate (else its (3+7)/2 = 5 would win on two seeds).
MAX_STEP, MAX_VALUES, MAX_MEAN = 100000, {0: 5.0, 1: 2.0, 2: 5.0}, 4.0
# Average: seed 0 (1+5+3)/3 = 3, seed 1 (3+2+7)/3 = 4, seed 2 (2+5)/2 = 3.5; over seeds 3.5.
AVERAGES, AVERAGE_MEAN = [3.0, 4.0, 3.5], 3.5


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@functools.lru_cache(maxsize=None)
def composed(*overrides: str) -> str:
    """The composed config as YAML (composing takes a second or two: once per setting)."""
    return OmegaConf.to_yaml(compose(list(overrides)))


def make_run(folder: Path, overrides: tuple[str, ...], seed: int, evals: list[tuple[int, float]],
             final: bool = True, episode_len: int = 25) -> Path:
    """A run folder as marl.experiment writes it: config.yaml, and metrics.jsonl with training,
    evaluation and (if ``final``) final records."""
    folder.mkdir(parents=True)
    cfg = OmegaConf.create(composed(*overrides, f"eval.interval={INTERVAL}"))
    cfg.seed = seed
    OmegaConf.save(cfg, folder / "config.yaml")
    lines = []
    for steps, value in evals:
        clock = {"env_steps": steps, "episodes": steps // episode_len, "grad_steps": steps // episode_len - 10}
        lines.append({**clock, "time": steps / 100, "train/return_mean": value - 1})  # 100 steps/s
        lines.append({**clock, METRIC: value, "eval/return_std": 0.5, "eval/length_mean": float(episode_len)})
    if final:
        lines.append({**clock, "final": 1.0})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return folder


def make_group(root: Path, overrides: tuple[str, ...], curves: dict[int, list[tuple[int, float]]],
               final: bool = True, scale: float = 1.0) -> list[Path]:
    return [make_run(root / f"{'_'.join(overrides)}_seed{s}", overrides, s, [(t, v * scale) for t, v in c],
                     final=final)
            for s, c in curves.items()]


# --- the computation on hand-made curves --------------------------------------------------------

def test_evaluation_points_align_overshooting_seeds_on_the_interval():
    # seeds evaluated at slightly different env steps land on the same points
    assert evaluation_points([50000, 100000, 150000], INTERVAL) == [1, 2, 3]
    assert evaluation_points([50003, 100004, 150002], INTERVAL) == [1, 2, 3]
    # an overshoot that jumped a whole multiple leaves that point empty, later points stay aligned
    assert evaluation_points([50003, 150010, 200001], INTERVAL) == [1, 3, 4]
    # the final evaluation at a t_max that is not a multiple of the interval takes the next point
    assert evaluation_points([100, 200, 250], 100) == [1, 2, 3]
    # without a schedule (or the clock of its unit), points are evaluation indices
    assert evaluation_points([5, 17, 30], None) == [0, 1, 2]
    assert evaluation_points([None, None], 100) == [0, 1]


def test_maximum_over_seeds_by_hand():
    runs = [dict(zip(evaluation_points([s for s, _ in c], INTERVAL), c)) for c in CURVES.values()]
    point, step, values = maximum_over_seeds(runs)
    assert (point, step, values) == (2, MAX_STEP, MAX_VALUES)
    assert np.mean(list(values.values())) == pytest.approx(MAX_MEAN)
    # the step is the earliest env step at which a seed evaluated that point
    shifted = [{1: (50003, 1.0), 2: (100004, 9.0)}, {1: (50001, 1.0), 2: (100002, 9.0)}]
    assert maximum_over_seeds(shifted)[:2] == (2, 100002)
    # ties go to the earliest point; no evaluation at all gives None
    assert maximum_over_seeds([{1: (10, 2.0), 2: (20, 2.0)}, {1: (11, 4.0), 2: (21, 4.0)}])[0] == 1
    assert maximum_over_seeds([{}, {}]) is None


def test_maximum_when_no_point_is_common_to_all_seeds():
    # seed 1 jumped point 2, seed 0 jumped point 3: the candidates are the points most seeds reached (1, 4)
    runs = [{1: (50000, 1.0), 2: (100000, 9.0), 4: (200000, 4.0)},
            {1: (50004, 3.0), 3: (150007, 8.0), 4: (200003, 2.0)}]
    point, step, values = maximum_over_seeds(runs)
    assert (point, step, values) == (4, 200000, {0: 4.0, 1: 2.0})  # (4+2)/2 = 3 > (1+3)/2 = 2


def test_average_return_is_the_mean_over_all_evaluations(tmp_path):
    run = load_run(make_run(tmp_path / "r", ("env=mpe",), 0, CURVES[0]))
    assert run.score(METRIC, "average") == pytest.approx(3.0)
    assert run.score(METRIC, "final") == 3.0 and run.score(METRIC, "best") == 5.0  # unchanged


def test_compare_gives_maximum_and_average_with_intervals(tmp_path):
    """The group is still running (no final records): seed 2's missing evaluation counts as above."""
    make_group(tmp_path, ("env=mpe", "mixer=qmix"), CURVES, final=False)
    comp = report.compare([tmp_path], reps=300, curve_reps=50)
    (row,) = comp.tables[0].rows
    assert row.in_progress and len(row.runs) == 3
    assert row.maximum_step == MAX_STEP and row.maximum_scores == MAX_VALUES
    assert row.maximum["mean"].value == pytest.approx(MAX_MEAN)
    assert row.average["mean"].value == pytest.approx(AVERAGE_MEAN)
    assert row.maximum["iqm"].value == pytest.approx(4.0)  # IQM of 3 seeds: 25% of 3 rounds down to none trimmed
    for est, values in ((row.maximum["mean"], list(MAX_VALUES.values())), (row.average["mean"], AVERAGES)):
        assert min(values) <= est.low <= est.value <= est.high <= max(values)
        assert est.low < est.high  # the seeds differ, so the bootstrap interval is not a point
    # final and best are what they were: the last and the highest evaluation of each run
    assert row.final["mean"].value == pytest.approx((3 + 7 + 5) / 3)
    assert row.best["mean"].value == pytest.approx((5 + 7 + 5) / 3)


def test_finished_group_uses_its_finished_seeds_only(tmp_path):
    make_group(tmp_path, ("env=mpe",), {0: CURVES[0], 1: CURVES[1]})
    make_group(tmp_path, ("env=mpe",), {2: CURVES[2]}, final=False)
    (row,) = report.compare([tmp_path], reps=200, curve_reps=50).tables[0].rows
    assert not row.in_progress and [r.seed for r in row.runs] == [0, 1]
    # points 1..3 are common to both: means 2, 3.5, 5 -> point 3, the earliest step 150000
    assert row.maximum_step == 150000 and row.maximum_scores == {0: 3.0, 1: 7.0}
    assert row.maximum["mean"].value == pytest.approx(5.0)
    assert row.average["mean"].value == pytest.approx(3.5)  # (3 + 4) / 2


# --- the files ------------------------------------------------------------------------------------

def test_markdown_and_csv_have_the_new_columns(tmp_path):
    make_group(tmp_path / "runs", ("env=mpe", "mixer=qmix"), CURVES, final=False)
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--reps", "300"]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert lines[0] == ("| experiment | seeds | env steps | final mean [95% CI] | final IQM [95% CI] "
                        "| best mean [95% CI] | best IQM [95% CI] | maximum mean [95% CI] | maximum at (env steps) "
                        "| average mean [95% CI] | wall time per run (min) |")
    cells = [c.strip() for c in lines[1].strip("|").split("|")]
    assert len(cells) == 11 and cells[0] == "qmix (in progress)"
    assert cells[7].startswith("4.00 [") and cells[8] == "100000" and cells[9].startswith("3.50 [")
    # each run's last record at 100 steps/s: 1500 s, 1500.02 s, 1000 s -> median 25.0 min, 16.7-25.0
    assert cells[10] == "25.0 (16.7–25.0)"
    assert "*maximum*" in md and "*average*" in md and "per agent" not in md.lower()

    (row,) = read_csv(tmp_path / "out" / "summary.csv")
    for stat in ("final", "best", "maximum", "average"):
        for agg in ("mean", "iqm"):
            assert {f"{stat}_{agg}", f"{stat}_{agg}_ci_low", f"{stat}_{agg}_ci_high"} <= set(row)
    assert float(row["maximum_mean"]) == pytest.approx(MAX_MEAN) and row["maximum_env_steps"] == "100000"
    assert row["maximum_n_seeds"] == "3" and float(row["average_mean"]) == pytest.approx(AVERAGE_MEAN)
    assert float(row["maximum_mean_ci_low"]) <= MAX_MEAN <= float(row["maximum_mean_ci_high"])
    assert row["return_divisor"] == ""
    runs = {r["seed"]: r for r in read_csv(tmp_path / "out" / "runs.csv")}
    assert [float(runs[str(s)]["average"]) for s in (0, 1, 2)] == AVERAGES
    assert [float(runs[str(s)]["at_maximum"]) for s in (0, 1, 2)] == list(MAX_VALUES.values())
    assert [float(runs[str(s)]["wall_s"]) for s in (0, 1, 2)] == [1500.0, 1500.02, 1000.0]


def test_maximum_over_fewer_seeds_is_labelled(tmp_path):
    """No point common to all seeds: the maximum-at cell says how many seeds it is over."""
    curves = {0: [(50000, 1.0), (100000, 9.0), (200000, 4.0)], 1: [(50004, 3.0), (150007, 8.0), (200003, 2.0)]}
    make_group(tmp_path / "runs", ("env=mpe",), curves)
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--reps", "100"]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| 200000 |" in md  # all seeds reached points 1 and 4: (4+2)/2 = 3 beats (1+3)/2 = 2
    (row,) = read_csv(tmp_path / "out" / "summary.csv")
    assert row["maximum_n_seeds"] == "2" and float(row["maximum_mean"]) == pytest.approx(3.0)


# --- per agent ------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, expected", [
    (("env=mpe",), 3),                                            # simple_spread's default N
    (("env=mpe", "+env.kwargs.N=4"), 4),
    (("env=mpe", "env.scenario=simple_speaker_listener"), 2),
    (("env=lbf",), 2),                                            # Foraging-8x8-2p-2f-coop-v3
    (("env=lbf", "env.key=Foraging-2s-10x10-3p-3f-v3"), 3),
    (("env=rware", "env.key=rware-tiny-4ag-v2"), 4),
    (("env=climbing",), 2),
])
def test_number_of_agents_from_the_config(overrides, expected):
    assert n_agents(OmegaConf.to_container(OmegaConf.create(composed(*overrides)))) == expected


def test_per_agent_divides_by_the_number_of_agents(tmp_path):
    runs = tmp_path / "runs"
    make_group(runs / "mpe", ("env=mpe",), CURVES)                                  # 3 agents
    make_group(runs / "lbf", ("env=lbf",), CURVES)                                  # 2 agents
    make_group(runs / "mpe4", ("env=mpe", "+env.kwargs.N=4"), CURVES)               # 4 agents
    make_group(runs / "mean", ("env=mpe", "env.team_reward=mean"), CURVES)          # already per agent
    make_group(runs / "climb", ("env=climbing",), CURVES)                           # one shared payoff
    comp = report.compare([runs], reps=200, curve_reps=50, per_agent=True)
    assert comp.per_agent and len(comp.tables) == 5
    found = []
    for table in comp.tables:
        (row,) = table.rows
        env = row.runs[0].config["env"]
        n = 1 if env["name"] == "climbing" or env["team_reward"] == "mean" else {"mpe": 3, "lbf": 2}[env["name"]]
        n = 4 if env.get("kwargs") == {"N": 4} else n
        found.append(n)
        assert table.divisor == n and {r.divisor for r in row.runs} == {n}
        assert row.maximum["mean"].value == pytest.approx(MAX_MEAN / n)
        assert row.average["mean"].value == pytest.approx(AVERAGE_MEAN / n)
        assert row.final["mean"].value == pytest.approx((3 + 7 + 5) / 3 / n)
        assert row.best["mean"].value == pytest.approx((5 + 7 + 5) / 3 / n)
        assert row.curve.iqm[1] == pytest.approx(4.0 / n, rel=1e-3)  # the curves too: (5 + ~2 + 5) / 3 at 100000
    assert sorted(found) == [1, 1, 2, 3, 4]

    out = tmp_path / "out"
    assert report.main([str(runs), "--per-agent", "--out", str(out), "--reps", "200"]) == 0
    divisors = sorted(float(r["return_divisor"]) for r in read_csv(out / "summary.csv"))
    assert divisors == [1, 1, 2, 3, 4]
    md = (out / "report.md").read_text()
    assert "**Per agent** (`--per-agent`)" in md
    assert "## lbf (returns per agent: team returns divided by 2 agents)" in md
    assert "## climbing (returns per agent: the team reward is already every agent's reward, not divided)" in md
    runs_csv = [r for r in read_csv(out / "runs.csv") if r["env"] == "lbf"]
    assert sorted(float(r["final"]) for r in runs_csv) == [1.5, 2.5, 3.5]  # 3/2, 5/2, 7/2


def test_team_returns_without_the_option(tmp_path):
    make_group(tmp_path, ("env=mpe",), CURVES)
    comp = report.compare([tmp_path], reps=100, curve_reps=50)
    assert not comp.per_agent and comp.tables[0].divisor is None
    assert comp.tables[0].rows[0].maximum["mean"].value == pytest.approx(MAX_MEAN)


def test_per_agent_names_the_run_whose_agents_are_unknown(tmp_path, capsys):
    (run_dir,) = make_group(tmp_path, ("env=gymnasium", "env.factory=pkg:make"), {0: CURVES[0]})
    with pytest.raises(ValueError, match="gymnasium"):
        return_divisor(load_run(run_dir))
    assert report.main([str(tmp_path), "--per-agent"]) == 2
    err = capsys.readouterr().err
    assert str(run_dir) in err and "number of agents" in err and "'gymnasium'" in err
    assert report.main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0  # without the option: fine


def test_real_sweep_evaluated_in_episodes(sweep_two_step):
    """The shared two-step sweep (eval every 100 episodes, i.e. every 200 env steps): its points are
    on the episode clock, and every seed's evaluations line up on them."""
    comp = report.compare([sweep_two_step.path], reps=200, curve_reps=50)
    rows = {row.mixer: row for row in comp.tables[0].rows}
    for row in rows.values():
        assert len(row.maximum_scores) == len(row.runs) == 3  # every seed at the chosen point
        assert row.maximum_step in [s for s, _ in row.runs[0].evals(METRIC)]
        assert row.maximum["mean"].value >= max(row.final["mean"].value, row.average["mean"].value)
        run = row.runs[0]
        interval, unit = run.eval_schedule
        assert (interval, unit) == (100, "episodes")
        assert evaluation_points(run.eval_counts(METRIC, unit), interval) == [1, 2, 3, 4, 5, 6]
    assert rows["qmix"].maximum["mean"].value == pytest.approx(8.0)  # greedy-optimal from episode 300 on
    assert rows["qmix"].average["mean"].value <= 8.0


def test_wandb_report_panels_say_they_plot_team_returns(tmp_path):
    import wandb_workspaces.reports.v2 as wr

    from marl.report.publish import build_report

    make_group(tmp_path, ("env=mpe",), CURVES)
    for per_agent, note in ((True, True), (False, False)):
        comp = report.compare([tmp_path], reps=50, curve_reps=20, per_agent=per_agent)
        built = build_report(comp, entity="someone", project="marl", title="t")
        (grid,) = [b for b in built.blocks if isinstance(b, wr.PanelGrid)]
        assert ("team return; the tables above are per agent" in grid.panels[0].title) == note
        assert grid.panels[0].y == [METRIC]
        (md,) = [b for b in built.blocks if isinstance(b, wr.MarkdownBlock)]
        assert "maximum mean [95% CI]" in md.text and ("divided by 3 agents" in md.text) == per_agent
