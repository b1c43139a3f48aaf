"""Several seeds of one configuration in one process (``seeds_per_process``), each its own run.

The sweeper (:mod:`marl.seed_groups`) gives a process a *group*: the seeds of one configuration
and the run folder each would have had on its own. Here every member is a whole
:class:`~marl.experiment.Experiment` in its own folder (its lock, checkpoint and resume, envs,
buffer, generators, clocks, schedules, evaluation, ``metrics.jsonl`` and W&B run), except that
its gradient steps are taken by one :class:`~marl.vector_learner.VectorLearner` for all members
at once. The loop is the standalone loop, interleaved: every member collects one step (one policy call
acts for all); a member with gradient steps due waits, parked, until every member has some due,
and then they are taken in full rounds (:func:`collect_and_learn`); then each member that
completed a step runs its own schedules. A member that cannot start (its folder held by another
process, a refused resume) is refused alone, its folder untouched; a member that fails is recorded
as failed in its own folder; the others go on either way. A stop request checkpoints every member.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, open_dict

from marl import preemption, run_folder
from marl.buffers import allocate
from marl.errors import NonFiniteError
from marl.config import validate
from marl.experiment import REFUSALS, AlreadyFinished, Experiment, report_failure, report_refusal
from marl.learner import non_finite
from marl.vector_learner import VectorLearner

class MemberLearner:
    """What a member's :class:`Experiment` sees of the vectorised learner: its own slice."""

    def __init__(self, vector: VectorLearner, index: int) -> None:
        self.vector, self.index = vector, index
        own = vector.learners[index]
        self.policy, self.cfg = own.policy, own.cfg  # the member acts with views of the stacked weights
        self.reward_scaling = own.reward_scaling  # the member's own statistics (the value guard reads them)

    def update(self, batch: Any) -> dict[str, torch.Tensor]:
        raise RuntimeError("a member's gradient steps are taken for the whole group (VectorLearner.update)")

    def update_targets(self) -> None:
        mask = torch.zeros(self.vector.S, dtype=torch.bool)
        mask[self.index] = True
        self.vector.update_targets(mask)

    def state_dict(self) -> dict[str, Any]:
        return self.vector.member_state_dict(self.index)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.vector.load_member_state_dict(self.index, state)


def member_config(cfg: DictConfig, seed: int) -> DictConfig:
    """The config a standalone run of ``seed`` has (``run_dir`` stays Hydra's interpolation)."""
    member = cfg.copy()
    with open_dict(member):
        member.seed = seed
        member.vector_group = None
    return member


def read_group(path: str | Path) -> list[dict[str, Any]]:
    """The members of a group file written by the sweeper: ``seed``, ``run_dir``, ``overrides``."""
    return json.loads(Path(path).read_text())["members"]


def outcome(result: dict[str, float] | BaseException | None) -> dict[str, str]:
    """One member's outcome for the sweep: ``finished``, ``refused`` (it could not start: its folder
    was left as it was), ``failed`` or ``stopped`` (a stop request, or the group ended early), and why."""
    if isinstance(result, dict):
        return {"outcome": "finished"}
    if isinstance(result, REFUSALS):
        return {"outcome": "refused", "reason": f"{type(result).__name__}: {result}"}
    if isinstance(result, Exception):
        return {"outcome": "failed", "reason": f"{type(result).__name__}: {result}"}
    return {"outcome": "stopped"}


def run_group(cfg: DictConfig) -> list[dict[str, float] | BaseException]:
    """Train the group in ``cfg.vector_group``; one result (or the failure) per member, in order.

    Each member starts on its own, as its plain run would: a member that cannot start (its folder
    held by another process, a refused resume, an unreadable checkpoint) is refused alone, with the
    message a plain run prints, and the others train. Only when no member starts is the group
    refused as a whole (the first refusal is raised: ``launch.py`` exits with code 2 as for a plain
    run). What became of each member (:func:`outcome`) is written into the group file for the sweep.
    """
    validate(cfg)  # what every member shares: refused once, not once per member
    members_spec = read_group(cfg.vector_group)
    results: list[Any] = [None] * len(members_spec)
    try:
        members = [_start(cfg, spec, results, i) for i, spec in enumerate(members_spec)]
        live = [i for i, m in enumerate(members) if m is not None]
        if not live:
            refused = [r for r in results if isinstance(r, REFUSALS)]
            if refused and len(refused) == len(results):
                raise refused[0]
            return results
        group = [members[i] for i in live]
        vector = vectorise(group)
        try:
            vector.probe(_probe_batch(group[0]))
        except Exception:
            for m in group:
                m.close()
            raise
        _train(group, vector, results, live)
        return results
    finally:
        _write_outcome(cfg.vector_group, members_spec, results)


def _start(cfg: DictConfig, spec: dict[str, Any], results: list[Any], i: int) -> Experiment | None:
    """Member ``i``'s :class:`Experiment`, or None with ``results[i]`` saying why it does not train."""
    member_cfg, run_dir = member_config(cfg, int(spec["seed"])), Path(spec["run_dir"])
    try:
        return Experiment(member_cfg, run_dir=run_dir,
                          on_start=functools.partial(run_folder.write_overrides, run_dir, list(spec["overrides"])))
    except AlreadyFinished as done:
        print(done, file=sys.stderr, flush=True)
        results[i] = done.result
    except REFUSALS as exc:  # its folder is untouched: refused alone, the others go on
        report_refusal(exc)
        results[i] = exc
    except Exception as exc:  # it could not be built: failed alone, as its plain run would
        report_failure(member_cfg, run_dir, exc)
        results[i] = exc
    return None


def _write_outcome(group_file: str, members_spec: list[dict[str, Any]], results: list[Any]) -> None:
    """Each member's :func:`outcome` beside its entry in the group file (replaced whole, so a
    reader never sees half of it; a relaunched group reads its members from it as before)."""
    path = Path(group_file)
    members = [{**{k: v for k, v in spec.items() if k not in ("outcome", "reason")}, **outcome(r)}  # this attempt's
               for spec, r in zip(members_spec, results)]
    try:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({**json.loads(path.read_text()), "members": members}, indent=1))
        tmp.replace(path)
    except (OSError, ValueError) as exc:  # the members' own folders hold their results; this is a summary
        print(f"Could not record the members' outcomes in {path}: {exc}", file=sys.stderr, flush=True)


def vectorise(group: list[Experiment]) -> VectorLearner:
    """One batched learner for ``group``; each member's ``learner`` becomes its slice of it.

    Where the env can continue its episodes bitwise after a resume (a non-empty ``state_dict``:
    matrix games, SMAX), every member's batch is padded to the episode limit, so that a member's
    arithmetic does not depend on which other members share its rounds: a group stopped with its
    members in different phases meets them in other rounds when resumed, and still resumes
    bitwise. Elsewhere (Python envs, VMAS) a resume restarts the episodes anyway, and a batch is
    padded only to the longest of its round, which costs less when episodes end early.
    """
    bitwise = bool(group[0].env.state_dict())
    vector = VectorLearner([m.learner for m in group], pad_to=group[0].spec.episode_limit if bitwise else None)
    for s, m in enumerate(group):
        vector.load_member_state_dict(s, m.learner.state_dict())  # a resumed member's optimiser state
        m.learner = MemberLearner(vector, s)
    return vector


def _probe_batch(exp: Experiment) -> dict[str, torch.Tensor]:
    """A batch of empty one-step episodes: enough to run the batched loss once."""
    batch = allocate(exp.spec, exp.learner.cfg.batch_size)
    batch["filled"][:, 0] = True
    return batch


def collect_and_learn(group: list[Experiment], vector: VectorLearner, live: set[int],
                      fail: Callable[[int, Exception], None], parked: dict[int, int]) -> list[int]:
    """One step of the group, with its gradient steps taken in full rounds.

    Every live member that is not parked collects one step (one policy call acts for all live
    members). A member whose step makes gradient steps due is *parked* (``parked[s]``: how many
    are still due): it neither acts nor collects until they are taken. Once every live member is
    parked, a round takes one gradient step of every live member in one batched update; a member
    whose due steps are all taken leaves the park. Each member thus does what its standalone run
    does, in the same order (collect, its due gradient steps, its schedules), only at other
    moments; and every update and policy call has the same members, all live ones, whatever the
    members' phases. Members whose episodes end at different steps would otherwise be due at
    different steps, and each batched update would compute only the few that are due (on a GPU,
    where an update costs kernel launches, not arithmetic, as much as a full one).

    Returns the members that completed a step of their own (collected, and took the gradient
    steps it made due) in this call: their schedules (``after_step``) run next.
    """
    completed: list[int] = []
    everyone = sorted(live)
    acting = [s for s in everyone if s not in parked]
    if acting:
        acted = dict(zip(everyone, vector.act([group[s].runner.policy_inputs() for s in everyone], everyone)))
        for s in acting:
            try:
                due = group[s].collect(acted[s])
            except Exception as exc:
                fail(s, exc)
                continue
            if due:
                parked[s] = due
            else:
                completed.append(s)
    while live and all(s in parked for s in live):
        batches = [group[s].sample() if s in live else None for s in range(len(group))]
        stats, stepped = vector.update(batches)
        for s in sorted(live):
            if not bool(stepped[s]):
                del parked[s]
                fail(s, non_finite({k: v[s] for k, v in stats.items()}) or NonFiniteError("non-finite update"))
                continue
            group[s].learned({k: v[s] for k, v in stats.items()})
            parked[s] -= 1
            if not parked[s]:
                del parked[s]
                completed.append(s)
    return completed


def _train(group: list[Experiment], vector: VectorLearner, results: list[Any], index: list[int]) -> None:
    """The interleaved loop; ``results[index[s]]`` receives member ``s``'s result or failure."""
    live = set(range(len(group)))
    preempted: preemption.Preempted | None = None

    def fail(s: int, exc: Exception) -> None:
        failure = group[s].fail(exc)
        report_failure(group[s].cfg, group[s].run_dir, failure)
        group[s].close()
        live.discard(s)
        results[index[s]] = failure

    parked: dict[int, int] = {}
    while live:
        for s in collect_and_learn(group, vector, live, fail, parked):
            try:
                group[s].after_step()
                if group[s].done():
                    results[index[s]] = group[s].finish()
                    group[s].close()
                    live.discard(s)
            except preemption.Preempted as exc:  # checkpointed: the others checkpoint too, then stop
                preempted = exc
                group[s].close()
                live.discard(s)
            except Exception as exc:
                fail(s, exc)
    if preempted is not None:
        raise preempted
