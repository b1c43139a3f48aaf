"""The vectorised learner: S members in one batched model behave as S standalone learners.

* equivalence: members built from seeds 0, 1, 2 and fed the batches their standalone learners
  get produce the same losses for 50 updates (float tolerance), for every agent and mixer, both
  optimisers and reward standardisation;
* independence: a member that does not step this round is left bitwise as it was, and the others
  still match their standalone runs; a member with NaN rewards (or a huge reward scale) is not
  stepped and changes nothing in the others;
* a member's checkpoint is a standalone learner's, both ways.
"""

from __future__ import annotations

import pytest
import torch

from marl.config import Optimizer
from marl.errors import ConfigError, NonFiniteError
from marl.experiment import Experiment
from marl.learner import FINITE_STATS, all_finite, check_finite, make_optimizer, non_finite
from marl.vector_learner import VectorLearner, stack_batches

from helpers import run_config

SEEDS = (0, 1, 2)
SMALL = ("learner.batch_size=8", "buffer.capacity=64", "epsilon.anneal=500")


def _members(tmp_path, *overrides: str) -> list[Experiment]:
    """Standalone experiments for SEEDS, each with a buffer that holds a few batches."""
    exps = []
    for seed in SEEDS:
        exp = Experiment(run_config(tmp_path / f"seed{seed}", *SMALL, f"seed={seed}", *overrides))
        while exp.buffer.size < 24:
            res = exp.runner.step(1.0)
            if res.episodes is not None:
                exp.buffer.insert(res.episodes)
        exps.append(exp)
    return exps


def _batches(exps: list[Experiment], n: int) -> list[list[dict[str, torch.Tensor]]]:
    gens = [torch.Generator().manual_seed(100 + i) for i in range(len(exps))]
    return [[exp.buffer.sample(8, g) for exp, g in zip(exps, gens)] for _ in range(n)]


CASES = [
    ("env=climbing", "agent=mlp", "mixer=qmix"),
    ("env=climbing", "agent=rnn", "mixer=vdn"),
    ("env=climbing", "agent=rnn", "mixer=none", "learner.optimizer=adam", "learner.optim_eps=1e-8"),
    ("env=two_step", "agent=rnn", "mixer=qmix", "learner.standardise_rewards=true"),
    ("env=lbf", "agent=rnn", "mixer=qmix", "learner.optimizer=adam", "learner.standardise_rewards=true"),
]


@pytest.mark.parametrize("case", CASES, ids=["-".join(c[:3]) for c in CASES])
def test_members_match_standalone_learners_for_50_updates(tmp_path, case):
    standalone = _members(tmp_path / "a", *case)
    members = _members(tmp_path / "b", *case)
    vector = VectorLearner([exp.learner for exp in members])
    for step, batches in enumerate(_batches(standalone, 50)):
        want = [exp.learner.update(b) for exp, b in zip(standalone, batches)]
        got, stepped = vector.update(batches)
        assert stepped.all()
        for s, w in enumerate(want):
            torch.testing.assert_close(got["loss"][s], w["loss"], rtol=1e-4, atol=1e-5,
                                       msg=lambda m: f"member {s}, update {step}: {m}")
            torch.testing.assert_close(got["grad_norm"][s], w["grad_norm"], rtol=1e-3, atol=1e-4)
        if step % 10 == 9:
            for exp in standalone:
                exp.learner.update_targets()
            vector.update_targets(torch.ones(3, dtype=torch.bool))
    for s, exp in enumerate(standalone):  # the members' own modules see the trained weights
        for (k, p), q in zip(exp.learner.policy.named_parameters(), members[s].learner.policy.parameters()):
            torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-4, msg=lambda m: f"member {s} {k}: {m}")


@pytest.mark.parametrize("idle_member,extra", [(1, ()), (0, ("learner.standardise_rewards=true",))],
                         ids=["middle", "first-standardised"])
def test_a_member_that_does_not_step_is_untouched_and_the_others_go_on(tmp_path, idle_member, extra):
    """Only the members with a batch are computed: the idle one (first or middle, so that a
    member's place in the computed subset differs from its index) keeps its weights, optimiser
    and reward statistics bitwise, and the others match their standalone runs."""
    case = ("env=climbing", "agent=rnn", "mixer=qmix", "learner.optimizer=adam", *extra)
    standalone = _members(tmp_path / "a", *case)
    members = _members(tmp_path / "b", *case)
    vector = VectorLearner([exp.learner for exp in members])
    for step, batches in enumerate(_batches(standalone, 12)):
        idle = step % 3 == 1  # the idle member skips every third update
        before = vector.member_state_dict(idle_member)
        want = [exp.learner.update(b) if not (idle and s == idle_member) else None
                for s, (exp, b) in enumerate(zip(standalone, batches))]
        got, stepped = vector.update([None if (idle and s == idle_member) else b for s, b in enumerate(batches)])
        assert stepped.tolist() == [not (idle and s == idle_member) for s in range(3)]
        for s, w in enumerate(want):
            if w is not None:
                torch.testing.assert_close(got["loss"][s], w["loss"], rtol=1e-4, atol=1e-5,
                                           msg=lambda m: f"member {s}, update {step}: {m}")
        if idle:
            _assert_same(vector.member_state_dict(idle_member), before)
    # The idle member took 8 steps, the others 12: Adam's bias correction is per member.
    assert [int(x) for x in vector.optimizer.steps] == [8 if s == idle_member else 12 for s in range(3)]


def _assert_same(a, b, path="state"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{path} changed"
    else:
        assert a == b, path


@pytest.mark.parametrize("poison", ["nan", "huge"])
def test_one_members_fault_does_not_touch_the_others(tmp_path, poison):
    case = ("env=climbing", "agent=rnn", "mixer=qmix")
    clean = VectorLearner([exp.learner for exp in _members(tmp_path / "a", *case)])
    hurt = VectorLearner([exp.learner for exp in _members(tmp_path / "b", *case)])
    for batches in _batches(_members(tmp_path / "c", *case), 10):
        bad = dict(batches[2])
        bad["reward"] = bad["reward"] * (float("nan") if poison == "nan" else 1e6)
        want, _ = clean.update(batches)
        got, stepped = hurt.update([batches[0], batches[1], bad])
        for s in (0, 1):
            assert torch.equal(got["loss"][s], want["loss"][s]), f"member {s} was coupled to member 2"
        assert stepped.tolist() == [True, True, poison == "huge"]
    for s in (0, 1):
        _assert_same(hurt.member_state_dict(s), clean.member_state_dict(s))


def test_a_member_checkpoint_is_a_standalone_learners(tmp_path):
    case = ("env=climbing", "agent=rnn", "mixer=qmix", "learner.optimizer=adam")
    members = _members(tmp_path / "b", *case)
    vector = VectorLearner([exp.learner for exp in members])
    batches = _batches(members, 5)
    for b in batches:
        vector.update(b)
    state = vector.member_state_dict(2)
    standalone = _members(tmp_path / "a", *case)[2].learner
    standalone.load_state_dict(state)  # a standalone learner takes a member's checkpoint
    fresh = VectorLearner([exp.learner for exp in _members(tmp_path / "c", *case)])
    fresh.load_member_state_dict(2, standalone.state_dict())  # and the other way round
    _assert_same(fresh.member_state_dict(2), state)
    nxt = _batches(members, 1)[0]
    want = standalone.update(nxt[2])
    got, _ = fresh.update(nxt)
    torch.testing.assert_close(got["loss"][2], want["loss"], rtol=1e-4, atol=1e-5)


def test_stacked_batches_pad_time_with_unfilled_steps():
    a = {"filled": torch.ones(2, 3, dtype=torch.bool), "obs": torch.ones(2, 4, 1, 5)}
    b = {"filled": torch.ones(2, 5, dtype=torch.bool), "obs": torch.ones(2, 6, 1, 5)}
    out = stack_batches([a, b])
    assert out["filled"].shape == (2, 2, 5) and out["obs"].shape == (2, 2, 6, 1, 5)
    assert not out["filled"][0, :, 3:].any() and (out["obs"][0, :, 4:] == 0).all()
    limit = stack_batches([a, b], steps=8)  # to the episode limit: obs keeps its one extra step
    assert limit["filled"].shape == (2, 2, 8) and limit["obs"].shape == (2, 2, 9, 1, 5)
    assert not limit["filled"][1, :, 5:].any() and (limit["obs"][1, :, 6:] == 0).all()


def test_padded_to_the_limit_a_members_step_does_not_depend_on_the_others(tmp_path):
    """With ``pad_to`` (the episode limit, as groups on envs that resume bitwise use), member 0's
    steps are bitwise the same whether member 1's batches are short or full-length, and when
    member 0 is computed alone: a resumed group pairs other steps in its rounds (docs/vectorised.md,
    "Full update rounds"). Padded to the round's longest instead, or with a lone member computed
    without its copy, the test fails at its first update."""
    case = ("env=lbf", "env.key=Foraging-5x5-2p-1f-v3", "num_envs=1")  # one food: episodes of 2-50 steps
    runs = [_members(tmp_path / name, *case) for name in "abc"]
    limit = runs[0][0].spec.episode_limit
    vectors = [VectorLearner([exp.learner for exp in exps], pad_to=limit) for exps in runs]
    lengths = [runs[0][s].buffer.lengths[: runs[0][s].buffer.size] for s in range(3)]
    short0, short1 = (torch.nonzero(lengths[s] < limit).flatten() for s in (0, 1))
    long1 = torch.nonzero(lengths[1] == limit).flatten()
    assert len(short0) and len(short1) and len(long1), lengths
    g = torch.Generator().manual_seed(0)
    for step in range(8):
        pick = [ix[torch.randint(len(ix), (8,), generator=g)] for ix in (short0, short1, long1)]
        b0 = runs[0][0].buffer.episodes(pick[0])
        b2 = runs[0][2].buffer.episodes(pick[0])
        got = [vectors[0].update([b0, runs[0][1].buffer.episodes(pick[1]), b2])[0],
               vectors[1].update([b0, runs[0][1].buffer.episodes(pick[2]), b2])[0],
               vectors[2].update([b0, None, None])[0]]
        for v, name in ((vectors[1], "beside a full-length batch"), (vectors[2], "alone")):
            for k in vectors[0].online:
                assert torch.equal(v.params[k][0], vectors[0].params[k][0]), f"update {step}, {name}: {k}"
        for stats in got[1:]:
            assert torch.equal(stats["loss"][0], got[0]["loss"][0]) and torch.equal(stats["grad_norm"][0],
                                                                                    got[0]["grad_norm"][0])


@pytest.mark.parametrize("optimizer", list(Optimizer), ids=[o.value for o in Optimizer])
def test_a_group_steps_its_members_with_the_standalone_learners_optimizer(tmp_path, optimizer):
    """Both paths build the optimiser from one mapping (``make_optimizer``): the same torch class
    with the same settings, for every value of ``learner.optimizer``."""
    exps = [Experiment(run_config(tmp_path / f"s{s}", "env=climbing", f"seed={s}",
                                  f"learner.optimizer={optimizer.value}")) for s in range(2)]
    standalone = exps[0].learner.optimizer
    vector = VectorLearner([exp.learner for exp in exps])
    assert type(vector.optimizer.optimizer) is type(standalone)
    assert vector.optimizer.optimizer.defaults == standalone.defaults
    assert type(standalone).__name__.lower() == optimizer.value


def test_an_unknown_optimizer_is_a_config_error_naming_the_key():
    cfg = type("Cfg", (), {"optimizer": "sgd", "lr": 1e-3})()
    with pytest.raises(ConfigError, match="learner.optimizer='sgd' is invalid: choose one of rmsprop, adam"):
        make_optimizer([torch.zeros(2, requires_grad=True)], cfg)


@pytest.mark.parametrize("key", [*FINITE_STATS, "loss_td", "loss_central"])
def test_the_group_and_the_plain_learner_stop_on_the_same_statistics(key):
    """A member is left out of the group's step exactly when its standalone learner would stop,
    a mixer's extra loss terms (``loss_<name>``) included."""
    stats = {k: torch.ones(3) for k in (*FINITE_STATS, "td_abs", "loss_td", "loss_central")}
    stats[key] = torch.tensor([1.0, float("nan"), 1.0])
    assert all_finite(stats).tolist() == [True, False, True]
    for s in range(3):
        member = {k: v[s] for k, v in stats.items()}
        if s == 1:
            with pytest.raises(NonFiniteError, match=f"{key}=nan"):
                check_finite(member)
        else:
            check_finite(member)


def test_a_member_whose_extra_loss_term_goes_nan_is_stopped_alone(tmp_path):
    """Weighted QMIX's Q* agents of member 1 go NaN: its ``loss_central`` (and so its loss) is NaN
    while its TD term stays finite. Member 1 is not stepped and its fault names the extra term;
    members 0 and 2 are bitwise those of a clean group."""
    case = ("env=climbing", "agent=rnn", "mixer=ow_qmix")
    clean = VectorLearner([exp.learner for exp in _members(tmp_path / "a", *case)])
    hurt = VectorLearner([exp.learner for exp in _members(tmp_path / "b", *case)])
    central = [k for k in hurt.params if k.startswith("mixer.central_agents.")]
    assert central
    with torch.no_grad():
        for k in central:
            hurt.params[k][1] = float("nan")
    for batches in _batches(_members(tmp_path / "c", *case), 4):
        want, _ = clean.update(batches)
        got, stepped = hurt.update(batches)
        assert stepped.tolist() == [True, False, True]
        assert torch.isfinite(got["loss_td"][1]) and not torch.isfinite(got["loss_central"][1])
        assert "loss_central=nan" in str(non_finite({k: v[1] for k, v in got.items()}))
        for s in (0, 2):
            assert torch.equal(got["loss"][s], want["loss"][s]), f"member {s} was coupled to member 1"
    for s in (0, 2):
        _assert_same(hurt.member_state_dict(s), clean.member_state_dict(s))
    assert [int(x) for x in hurt.optimizer.steps] == [4, 0, 4]
