"""Reward standardisation (``learner.standardise_rewards``): EPyMARL's running mean/std of the reward.

EPyMARL (uoe-agents/epymarl, ``src/components/standarize_stream.py`` and ``QLearner.train`` in
``src/learners/q_learner.py``) keeps a :class:`RunningMeanStd` of the team reward, updates it with
every sampled batch before the targets are computed, and replaces the batch's rewards by
``(r - mean) / sqrt(var)``. This module does the same, with the same constants: the statistics
start at mean 0, variance 1 and a count of ``epsilon = 1e-4``; each batch is merged with Chan et
al.'s parallel update, using the batch's *unbiased* variance (``torch.var``); there is no epsilon
under the square root.

EPyMARL updates with the whole ``[B, T]`` reward tensor of the batch, padding included (the zero
rewards after a short episode's end, up to the longest episode of the batch). By default padded
steps (``filled == False``) never enter the statistics here: ``update`` takes the mask, and
changing a padded reward changes nothing. ``learner.reward_stats_include_padding=true`` gives
EPyMARL's statistics instead (:func:`statistics_mask`; ``preset=epymarl`` sets it): the padded
steps up to the batch's longest episode enter as the zeros the buffer pads with. Two minor
differences remain: the statistics are held in
float64 (EPyMARL: float32), and a batch with a single real step adds variance 0 (EPyMARL's
``torch.var`` of one element is NaN); a batch with none leaves the statistics unchanged.

The state is three float64 0-dim tensors (mean, var, count), so a checkpoint round trip
(``torch.save``/``torch.load(weights_only=True)``) restores it bitwise. Everything stays on the
reward's device: no host synchronisation per update.
"""

from __future__ import annotations

import torch

EPSILON = 1e-4  # EPyMARL's initial count (RunningMeanStd(epsilon=1e-4))


def statistics_mask(filled: torch.Tensor, include_padding: bool) -> torch.Tensor:
    """[B, T] bool: the steps whose rewards enter the statistics.

    ``filled`` (the real steps), or with ``include_padding`` every step up to the batch's longest
    episode, as EPyMARL's QLearner sees its batch after ``max_t_filled`` trimmed it. A batch that
    was padded further (a seed group stacks its members' batches to a common length) does not
    count that extra padding.
    """
    if not include_padding:
        return filled
    longest = filled.sum(dim=1).max()
    return (torch.arange(filled.shape[1], device=filled.device) < longest).expand_as(filled)


class RunningMeanStd:
    """Running mean and (population) variance of the real steps' rewards seen so far."""

    def __init__(self, epsilon: float = EPSILON, device: torch.device | str = "cpu") -> None:
        self.mean = torch.zeros((), dtype=torch.float64, device=device)
        self.var = torch.ones((), dtype=torch.float64, device=device)
        self.count = torch.full((), float(epsilon), dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        """Merge the values ``x[mask]`` (any shape, ``mask`` of the same shape) into the statistics."""
        self._to(x.device)
        mask = mask.to(torch.bool)
        v = torch.where(mask, x.to(torch.float64), 0.0)  # padding never enters, whatever it holds
        n = mask.sum(dtype=torch.float64)
        batch_mean = v.sum() / n.clamp(min=1.0)
        batch_var = torch.where(mask, v - batch_mean, 0.0).square().sum() / (n - 1.0).clamp(min=1.0)  # unbiased
        delta = batch_mean - self.mean
        total = self.count + n
        new_mean = self.mean + delta * n / total
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        new_var = m2 / total
        seen = n > 0
        self.mean = torch.where(seen, new_mean, self.mean)
        self.var = torch.where(seen, new_var, self.var)
        self.count = torch.where(seen, total, self.count)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / sqrt(var)``, computed in float64 and returned in ``x``'s dtype."""
        self._to(x.device)
        return ((x.to(torch.float64) - self.mean) / torch.sqrt(self.var)).to(x.dtype)

    def _to(self, device: torch.device) -> None:
        if self.mean.device != device:
            self.mean, self.var, self.count = (t.to(device) for t in (self.mean, self.var, self.count))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.detach().cpu().clone(), "var": self.var.detach().cpu().clone(),
                "count": self.count.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        device = self.mean.device
        self.mean, self.var, self.count = (
            torch.as_tensor(state[k], dtype=torch.float64).to(device).clone() for k in ("mean", "var", "count"))
