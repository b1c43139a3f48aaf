"""S independent Q-learners trained as one batched model (the learner of ``seeds_per_process``).

Each member starts as the standalone :class:`~marl.learner.Learner` its seed builds (the same
initial weights), and stays independent: its own batch, reward statistics, optimiser state and
step count, gradient clipping by its own norm, target networks, and update schedule. Only the
arithmetic is shared: the members' parameters are stacked along a leading member dimension S and
the one loss of :meth:`Learner.loss` runs for all members at once under ``torch.func.vmap``
(``functional_call`` on a parameter-free template), so there is no second copy of the learning
rule to keep in step with the first. The loss that is differentiated is the *sum* of the members'
own masked means: each member's gradient is exactly its standalone gradient (a mean over members
would scale each by 1/S). A member whose loss, gradient norm or Q-values are not finite is not
stepped and is reported, and no other member is touched.

The members' own modules (``learners[s].policy`` ...) are kept, their parameters replaced by
views into the stacked tensors, so each member acts with its current weights at no cost, and
:meth:`member_state_dict` writes a standalone learner's checkpoint.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from marl.buffers import Episodes
from marl.errors import ConfigError
from marl.learner import Learner, all_finite
from marl.member_optim import MemberOptimizer, clip_member_grads_
from marl.reward_scaling import statistics_mask

NETS = ("policy", "mixer", "target_policy", "target_mixer")


class _Nets(nn.Module):
    """The four networks of one learner as one module, whose forward is :meth:`Learner.loss`."""

    def __init__(self, learner: Learner) -> None:
        super().__init__()
        for name in NETS:
            setattr(self, name, getattr(learner, name))
        self.cfg = learner.cfg
        self.time_limit_is_terminal = learner.time_limit_is_terminal
        self.reward_scaling = None  # rewards are standardised per member before the batched loss

    def forward(self, batch: Episodes) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return Learner.loss(self, batch)  # type: ignore[arg-type]


def stack_batches(batches: list[Episodes], steps: int | None = None) -> Episodes:
    """Members' batches as one ``[S, B, T, ...]`` batch, padded in time to ``steps`` (default: the
    longest batch's).

    Padding is what the buffer already pads with (zeros, ``filled`` False), so each member's
    masked loss is unchanged up to rounding: its masked sums run over a longer tensor.
    """
    steps = max(b["filled"].shape[1] for b in batches) if steps is None else steps
    out: Episodes = {}
    for key in batches[0]:
        extra = batches[0][key].shape[1] - batches[0]["filled"].shape[1]  # 1 for obs, state, avail (T + 1)
        out[key] = torch.stack([nn.functional.pad(b[key], _time_pad(b[key], steps + extra)) for b in batches])
    return out


def _scatter(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """``values`` of the members in ``index`` placed in a zero tensor of all ``size`` members."""
    return values.new_zeros(size, *values.shape[1:]).index_copy_(0, index, values)


def _time_pad(x: torch.Tensor, length: int) -> tuple[int, ...]:
    return (0, 0) * (x.dim() - 2) + (0, length - x.shape[1])


def _use_vmappable_paths(module: nn.Module) -> None:
    """Agents with paths that vmap cannot batch (``nn.GRU``, ``gru_cell``) switch to ones it can."""
    for m in module.modules():
        if hasattr(m, "vmappable"):
            m.vmappable = True


class VectorLearner:
    """``learners`` (one per member, built standalone from each seed) as one batched learner.

    ``pad_to``: pad every member's batch in time to this many steps (the env's episode limit)
    instead of to the longest batch of the update. A member's masked sums then run over the same
    shape whatever the other members drew, so its arithmetic is bitwise independent of them: what
    makes a group resume bitwise when its members were stopped in different phases
    (:func:`marl.vector_experiment.vectorise` sets it where the env can resume bitwise).
    """

    def __init__(self, learners: list[Learner], pad_to: int | None = None) -> None:
        first = learners[0]
        self.learners, self.S, self.cfg, self.device = learners, len(learners), first.cfg, first.device
        self.pad_to = pad_to
        self.check_finite = first.check_finite
        nets = [_Nets(learner) for learner in learners]
        params, buffers = stack_module_state(nets)
        self.template = copy.deepcopy(nets[0]).to("meta")
        _use_vmappable_paths(self.template)
        self.params = {k: v.detach().requires_grad_(k.split(".")[0] in ("policy", "mixer")) for k, v in params.items()}
        self.buffers = buffers
        self.online = [k for k in self.params if k.split(".")[0] in ("policy", "mixer")]
        self.optimizer = MemberOptimizer([self.params[k] for k in self.online], self.cfg)
        for s, learner in enumerate(learners):  # members act with views of the stacked weights
            self._bind(s, learner)
        self._loss = vmap(self._member_loss, in_dims=(0, 0, 0), randomness="error")
        self._act = vmap(self._member_act, randomness="error")

    def _bind(self, s: int, learner: Learner) -> None:
        for key, stacked in self.params.items():
            owner, name = key.split(".", 1)
            module = getattr(learner, owner)
            *path, leaf = name.split(".")
            for part in path:
                module = getattr(module, part)
            module._parameters[leaf] = stacked.detach()[s]  # a view: always the current weights

    @torch.no_grad()
    def act(self, inputs: list[tuple[torch.Tensor, ...]], members: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One policy call for the envs of all ``members``: each input is a member's
        ``Runner.policy_inputs()``; returns each member's ``(q, hidden)``."""
        index = torch.tensor(members, device=self.device)
        params = {k.split(".", 1)[1]: v.detach().index_select(0, index)
                  for k, v in self.params.items() if k.startswith("policy.")}
        buffers = {k.split(".", 1)[1]: v.index_select(0, index) for k, v in self.buffers.items()
                   if k.startswith("policy.")}
        q, hidden = self._act(params, buffers, *(torch.stack(x) for x in zip(*inputs)))
        return [(q[i], hidden[i]) for i in range(len(members))]

    def _member_act(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], obs: torch.Tensor,
                    last_actions: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return functional_call(self.template.policy, (params, buffers), (obs, last_actions, hidden))

    def _member_loss(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                     batch: Episodes) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return functional_call(self.template, (params, buffers), (batch,))

    def probe(self, batch: Episodes) -> None:
        """Run one batched loss (no step) to fail at start-up, naming the component, if the
        agent or mixer cannot be batched over members."""
        try:
            self.loss(stack_batches([batch] * self.S))
        except Exception as exc:
            agent = type(self.learners[0].policy.agent).__name__
            mixer = type(self.learners[0].mixer).__name__
            raise ConfigError(f"seeds_per_process={self.S}: agent {agent} with mixer {mixer} cannot run "
                              f"vectorised ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); use "
                              "seeds_per_process=1") from exc

    def loss(self, batch: Episodes) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-member losses ``[S]`` and statistics ``{name: [S]}`` of a stacked batch."""
        return self._loss(self.params, self.buffers, batch)

    def update(self, batches: list[Episodes | None]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One gradient step for every member with a batch (None: the member does not step).

        Only the members with a batch are computed: members whose episodes end at different
        times are due at different steps, and computing every member each time (the idle ones
        on a copy) made a group's update cost S members' arithmetic for every member's step.
        A lone member is computed beside a copy of itself (the copy's result is dropped): batched
        over one member, the kernels round differently than over two or more, and a member's
        arithmetic must not depend on how many others step with it (see ``pad_to``).
        Returns the statistics ``{name: [S]}`` (zero for members that did not step) and the mask
        of members that stepped; a member with a non-finite statistic (the plain learner's check,
        :func:`marl.learner.all_finite`: the loss and its extra terms, gradient norm, Q-values) is
        left out of the step and of the mask.
        """
        members = [s for s, b in enumerate(batches) if b is not None]
        n = len(members)
        computed = members if n > 1 else members * 2
        index = torch.tensor(computed, device=self.device)
        everyone = computed == list(range(self.S))
        params = self.params if everyone else {
            k: v.detach().index_select(0, index).requires_grad_(v.requires_grad) for k, v in self.params.items()}
        buffers = self.buffers if everyone else {k: v.index_select(0, index) for k, v in self.buffers.items()}
        batch = stack_batches([batches[s] for s in members], self.pad_to)
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        batch = self._standardised_for(batch, members)
        if n == 1:
            batch = {k: v.expand(2, *v.shape[1:]) for k, v in batch.items()}
        losses, stats = self._loss(params, buffers, batch)
        grads = torch.autograd.grad(losses.sum(), [params[k] for k in self.online], allow_unused=True)
        grads = [torch.zeros_like(params[k]) if g is None else g for k, g in zip(self.online, grads)]
        stats = {k: v.detach() for k, v in stats.items()}
        stats["grad_norm"] = clip_member_grads_(grads, self.cfg.grad_clip)  # before dropping a copy: same shapes
        grads, stats = [g[:n] for g in grads], {k: v[:n] for k, v in stats.items()}
        finite = torch.ones(n, dtype=torch.bool)
        if self.check_finite:
            finite = all_finite(stats).cpu()
        mask = torch.zeros(self.S, dtype=torch.bool)
        mask[members] = finite
        if not everyone:
            grads = [_scatter(g, index[:n], self.S) for g in grads]
            stats = {k: _scatter(v, index[:n], self.S) for k, v in stats.items()}
        self.optimizer.step(grads, mask)
        return stats, mask

    def _standardised_for(self, batch: Episodes, members: list[int]) -> Episodes:
        """Reward standardisation by each member's own statistics (row j of ``batch`` is
        member ``members[j]``'s), updated with its real steps only."""
        scalers = [self.learners[s].reward_scaling for s in members]
        if scalers[0] is None:
            return batch
        rewards = []
        for j, scaler in enumerate(scalers):
            scaler.update(batch["reward"][j], statistics_mask(batch["filled"][j], self.cfg.reward_stats_include_padding))
            rewards.append(torch.where(batch["filled"][j], scaler.normalise(batch["reward"][j]), 0.0))
        return {**batch, "reward": torch.stack(rewards)}

    @torch.no_grad()
    def update_targets(self, mask: torch.Tensor) -> None:
        """Copy (or Polyak-average) online into target networks for the members in ``mask``."""
        tau = float(self.cfg.target_tau)
        for key in self.online:
            target = self.params["target_" + key]
            online = self.params[key]
            m = mask.to(online.device).view(-1, *[1] * (online.dim() - 1))
            new = online if tau == 1.0 else target.lerp(online, tau)
            target.copy_(torch.where(m, new, target))

    def member_state_dict(self, s: int) -> dict[str, Any]:
        """Member ``s``'s state as its standalone :class:`Learner` would save it (copies, not views)."""
        learner = self.learners[s]
        state = {name: {k: v.clone() for k, v in getattr(learner, name).state_dict().items()} for name in NETS}
        state["optimizer"] = self.optimizer.member_state(s, learner.optimizer)
        if learner.reward_scaling is not None:
            state["reward_scaling"] = learner.reward_scaling.state_dict()
        return state

    @torch.no_grad()
    def load_member_state_dict(self, s: int, state: dict[str, Any]) -> None:
        """Set member ``s`` from a standalone learner's (or :meth:`member_state_dict`'s) state."""
        for name in NETS:
            for k, v in state[name].items():
                key = f"{name}.{k}"
                if key in self.params:
                    self.params[key][s] = v
        self.optimizer.load_member_state(s, state["optimizer"])
        learner = self.learners[s]
        if learner.reward_scaling is not None and "reward_scaling" in state:
            learner.reward_scaling.load_state_dict(state["reward_scaling"])

