"""Mixers turn per-agent values [..., n_agents] (and the state [..., state_dim]) into [..., out_dim].

``out_dim`` is 1 for a joint value (QMIX, VDN) and n_agents for independent learners (``none``):
the learner treats every output column as one regression target, so it never needs to know which
mixer it has. ``needs_state`` is checked against the env before the first step.

Most mixers need only the chosen actions' values and the state: they implement
``forward(agent_qs, state)`` (qmix, vdn, none). A mixer that needs more (QPLEX: every action's
value and the joint action; Weighted QMIX: agent networks and a joint network of its own, a
weighted TD loss and a loss of its own) sets ``takes_mixer_input = True`` and implements
``forward(x: MixerInput) -> MixerOutput``. That is the one extension point between the learner
and a mixer: the learner builds a :class:`MixerInput` for each call and goes through :func:`mix`,
so it never branches on a mixer's name. A mixer may also implement ``bind(policy)`` (below).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import torch
from torch import nn

if TYPE_CHECKING:
    from marl.policy import Policy


@dataclass(frozen=True)
class MixerInput:
    """What the learner hands a mixer, for T steps of B episodes (n agents, A actions, s state).

    ``Learner.loss`` calls the target mixer first, on steps 1..T with the actions it bootstraps
    from (``next_step=True``; the result is the value V'(s_{t+1}) of the TD target), then the
    online mixer on steps 0..T-1 with the taken actions and the TD targets (``targets``, ``mask``
    and ``target_mixer`` set; the result is regressed on the targets). A call with
    ``next_step=False`` and no ``targets`` only values the given actions (``marl.qtable``).

    chosen    [B, T, n]     Q_i(a_i) of ``actions`` (online: with gradients)
    state     [B, T, s]     the state at these steps
    q_all     [B, T, n, A]  every action's Q_i (online: with gradients)
    avail     [B, T, n, A]  available actions (bool; an agent with none has all of them)
    actions   [B, T, n]     the actions valued (long): taken (online), bootstrap (target)
    greedy    [B, T, n]     the online agents' greedy available actions at these steps (long)
    episodes  the sampled batch ([B, T+1, ...] layout, ``marl.buffers``), for mixers with agent
              networks of their own; None outside the learner
    next_step False: steps 0..T-1 of ``episodes``; True: steps 1..T
    targets   [B, T, d]     the TD targets y (online call only; no gradient)
    mask      [B, T, d]     1.0 on real steps, 0.0 on padding (online call only)
    target_mixer  the target copy of this mixer (online call only), for values that the
              algorithm takes from the target networks (CW-QMIX's weights)
    """

    chosen: torch.Tensor
    state: torch.Tensor
    q_all: torch.Tensor
    avail: torch.Tensor
    actions: torch.Tensor
    greedy: torch.Tensor
    episodes: Optional[dict[str, torch.Tensor]] = None
    next_step: bool = False
    targets: Optional[torch.Tensor] = None
    mask: Optional[torch.Tensor] = None
    target_mixer: Optional[nn.Module] = None


@dataclass
class MixerOutput:
    """What a mixer returns to the learner.

    q_tot      [B, T, d]  target call: the values to bootstrap from; online call: the values
               regressed on the targets (and, for acting, what the agents' greedy actions maximise)
    td_weight  [B, T, d]  a weight per squared TD error (Weighted QMIX's w), no gradient; None is 1
    losses     extra scalar loss terms by name (online call only): ``Learner.loss`` adds each to
               the loss and reports it as ``loss_<name>``, covered by the finiteness check
    """

    q_tot: torch.Tensor
    td_weight: Optional[torch.Tensor] = None
    losses: dict[str, torch.Tensor] = field(default_factory=dict)


def mix(mixer: nn.Module, x: MixerInput) -> MixerOutput:
    """The learner's one call into a mixer: ``forward(x)`` for mixers that take a
    :class:`MixerInput`, ``forward(x.chosen, x.state)`` for the others."""
    if getattr(mixer, "takes_mixer_input", False):
        return mixer(x)
    return MixerOutput(mixer(x.chosen, x.state))


def bind(mixer: nn.Module, policy: "Policy") -> None:
    """Show a mixer the agents' policy once, before its target copy and parameter list are made.

    ``Learner.__init__`` calls it. A mixer that needs to know the agents (the number of actions, or
    agent networks of its own of the same architecture, as Weighted QMIX's Q* has) implements
    ``bind(policy)`` and builds those parts there; the others need nothing.
    """
    hook = getattr(mixer, "bind", None)
    if hook is not None:
        hook(policy)


def fresh_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with every parameter initialised afresh (the global torch RNG)."""
    clone = copy.deepcopy(module)
    for m in clone.modules():
        if m is not clone and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return clone
