"""Rollouts: steps all envs as one batch and hands back finished episodes.

Each env writes into its own row of a preallocated staging batch [B, T+1, ...]. When envs finish
(terminated, truncated, or at the episode limit, which counts as truncation), their rows are
copied out as whole episodes, and only those envs are reset and get a fresh RNN hidden state.
No Python loop runs over envs or agents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from marl.buffers import Episodes, allocate
from marl.envs.base import TimeStep, VecEnv
from marl.errors import NonFiniteError
from marl.policy import Policy, select_actions


@dataclass
class StepResult:
    """What one batched step produced: finished episodes (if ``record``) and their statistics."""

    n_steps: int
    episodes: Episodes | None = None
    returns: torch.Tensor | None = None
    lengths: torch.Tensor | None = None
    finished: torch.Tensor | None = None  # [B] bool
    info: dict[str, torch.Tensor] = field(default_factory=dict)


class Runner:
    def __init__(self, env: VecEnv, policy: Policy, device: torch.device, generator: torch.Generator,
                 record: bool = True, check_finite: bool = True) -> None:
        self.env, self.policy, self.device, self.generator = env, policy, device, generator
        self.record, self.check_finite = record, check_finite
        self.B, self.spec = env.num_envs, env.spec
        self.rows = torch.arange(self.B)
        self.stage = allocate(self.spec, self.B) if record else {}
        self.ts: TimeStep | None = None

    def reset(self) -> None:
        """Start fresh episodes in every env."""
        self.ts = self.env.reset()
        self.t = torch.zeros(self.B, dtype=torch.long)
        self.returns = torch.zeros(self.B)
        self.hidden = self.policy.initial_hidden(self.B, self.device)
        self.last_action = torch.full((self.B, self.spec.n_agents), self.spec.n_actions, dtype=torch.long)
        if self.record:
            for v in self.stage.values():
                v.zero_()
            self._write_obs(self.rows, self.t, self.ts)

    def _write_obs(self, rows: torch.Tensor, t: torch.Tensor, ts: TimeStep) -> None:
        self.stage["obs"][rows, t] = ts.obs[rows].cpu()
        self.stage["state"][rows, t] = ts.state[rows].cpu()
        self.stage["avail"][rows, t] = ts.avail[rows].cpu()

    def policy_inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the policy acts on next: obs [B, 1, n, o], last actions [B, 1, n], hidden [B·n, H]."""
        if self.ts is None:
            self.reset()
        return (self.ts.obs.to(self.device).unsqueeze(1), self.last_action.to(self.device).unsqueeze(1),
                self.hidden)

    @torch.no_grad()
    def step(self, epsilon: float, acted: tuple[torch.Tensor, torch.Tensor] | None = None) -> StepResult:
        """One step of every env. ``acted``: the policy's ``(q, hidden)`` on :meth:`policy_inputs`,
        computed by the caller (a vectorised group acts for all its members in one call)."""
        inputs = self.policy_inputs()
        ts = self.ts
        q, self.hidden = acted if acted is not None else self.policy(*inputs)
        if self.check_finite and not bool(torch.isfinite(q).all()):  # argmax over NaN would pick action 0
            raise NonFiniteError("non-finite Q-values while acting")
        actions = select_actions(q[:, 0], ts.avail.to(self.device), epsilon, self.generator).cpu()
        nxt = self.env.step(actions)
        reward, terminated = nxt.reward.cpu(), nxt.terminated.cpu()
        t = self.t
        if self.record:
            self.stage["actions"][self.rows, t] = actions
            self.stage["reward"][self.rows, t] = reward
            self.stage["terminated"][self.rows, t] = terminated
            self.stage["filled"][self.rows, t] = True
        self.t = t = t + 1
        self.returns += reward
        self.last_action = actions
        if self.record:
            self._write_obs(self.rows, t, nxt)
        done = nxt.done.cpu() | (t >= self.spec.episode_limit)
        result = StepResult(n_steps=self.B)
        if done.any():
            rows = done.nonzero().squeeze(1)
            result.finished = done
            result.returns, result.lengths = self.returns[rows].clone(), t[rows].clone()
            result.info = {k: v[rows].cpu() for k, v in nxt.info.items()}
            if self.record:
                result.episodes = {k: v[rows].clone() for k, v in self.stage.items()}
                for key in ("actions", "reward", "terminated", "filled"):
                    self.stage[key][rows] = 0
            nxt = self.env.reset(done)
            self.t = t.masked_fill(done, 0)
            self.returns.masked_fill_(done, 0.0)
            self.last_action[rows] = self.spec.n_actions
            n = self.spec.n_agents
            agent_rows = (rows.unsqueeze(1) * n + torch.arange(n)).flatten().to(self.device)
            self.hidden[agent_rows] = 0.0
            if self.record:
                self._write_obs(rows, self.t[rows], nxt)
        self.ts = nxt
        return result

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the in-flight episodes bitwise (if the env allows)."""
        env_state = self.env.state_dict()
        if not env_state or self.ts is None:
            return {}  # the env cannot be restored: resume starts fresh episodes
        return {"env": env_state, "ts": self.ts, "t": self.t, "returns": self.returns, "hidden": self.hidden,
                "last_action": self.last_action, "stage": self.stage}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            self.ts = None
            return
        self.env.load_state_dict(state["env"])
        self.ts, self.t, self.returns = state["ts"], state["t"], state["returns"]
        self.hidden, self.last_action = state["hidden"].to(self.device), state["last_action"]
        if self.record:
            self.stage = state["stage"]


def play(runner: Runner, n_episodes: int, epsilon: float = 0.0) -> tuple[list[float], list[int], dict[str, list[float]]]:
    """Returns, lengths and statistics of ``n_episodes`` whole episodes played from fresh resets:
    rounds of one episode per env, so short episodes are not over-represented."""
    returns: list[float] = []
    lengths: list[int] = []
    infos: dict[str, list[float]] = {}
    while len(returns) < n_episodes:
        runner.reset()
        active = torch.ones(runner.B, dtype=torch.bool)
        while active.any():
            res = runner.step(epsilon=epsilon)
            if res.finished is None:
                continue
            keep = active[res.finished]
            returns += res.returns[keep].tolist()
            lengths += res.lengths[keep].tolist()
            for k, v in res.info.items():
                infos.setdefault(k, []).extend(v[keep].float().tolist())
            active &= ~res.finished
    n = n_episodes
    return returns[:n], lengths[:n], {k: v[:n] for k, v in infos.items()}


def evaluate(runner: Runner, n_episodes: int, epsilon: float = 0.0) -> dict[str, float]:
    """The returns of ``n_episodes`` episodes (:func:`play`; greedy by default) as the run logs them.
    ``epsilon=1``: a uniform-random policy over the available actions (the report's random
    reference return, :mod:`marl.report.random_policy`)."""
    returns, lengths, infos = play(runner, n_episodes, epsilon)
    ret = torch.tensor(returns)
    out = {"eval/return_mean": ret.mean().item(), "eval/return_std": ret.std(unbiased=False).item(),
           "eval/length_mean": float(torch.tensor(lengths, dtype=torch.float).mean())}
    out.update({f"eval/{k}_mean": float(torch.tensor(v).mean()) for k, v in infos.items()})
    return out
