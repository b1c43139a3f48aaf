"""Several seeds of one configuration in one process (``seeds_per_process``), each its own run.

The sweeper (:mod:`marl.seed_groups`) gives a process a *group*: the seeds of one configuration
and the run folder each would have had on its own. Here every member is a whole
:class:`~marl.experiment.Experiment` in its own folder (its lock, checkpoint and resume, envs,
buffer, generators, clocks, schedules, evaluation, ``metrics.jsonl`` and W&B run), except that
its gradient steps are taken by one :class:`~marl.vector_learner.VectorLearner` for all members
at once. The loop is the standalone loop, interleaved: every member collects one step (one policy call
acts for all); a member with gradient steps due waits, parked, until every member has some due,
and then they are taken in full rounds (:func:`collect_and_learn`); then each member that
completed a step runs its own schedules. A member that fails is recorded as failed in its own folder
and the others go on; a stop request checkpoints every member.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from marl import preemption
from marl.buffers import allocate
from marl.errors import NonFiniteError
from marl.experiment import AlreadyFinished, Experiment, run_label
from marl.learner import non_finite
from marl.vector_learner import VectorLearner
from marl.wandb_naming import OVERRIDES_FILE

class MemberLearner:
    """What a member's :class:`Experiment` sees of the vectorised learner: its own slice."""

    def __init__(self, vector: VectorLearner, index: int) -> None:
        self.vector, self.index = vector, index
        own = vector.learners[index]
        self.policy, self.cfg = own.policy, own.cfg  # the member acts with views of the stacked weights

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


def run_group(cfg: DictConfig) -> list[dict[str, float] | BaseException]:
    """Train the group in ``cfg.vector_group``; one result (or the failure) per member, in order."""
    members_spec = read_group(cfg.vector_group)
    members: list[Experiment | None] = []
    results: list[Any] = [None] * len(members_spec)
    for i, spec in enumerate(members_spec):
        run_dir = Path(spec["run_dir"])
        (run_dir / OVERRIDES_FILE).parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(spec["overrides"]), run_dir / OVERRIDES_FILE)  # as Hydra writes it
        try:
            members.append(Experiment(member_config(cfg, int(spec["seed"])), run_dir=run_dir))
        except AlreadyFinished as done:
            print(done, file=sys.stderr, flush=True)
            members.append(None)
            results[i] = done.result
    live = [i for i, m in enumerate(members) if m is not None]
    if not live:
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
        print(f"Run failed [{run_label(group[s].cfg)}]: {type(failure).__name__}: {failure}", file=sys.stderr,
              flush=True)
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
