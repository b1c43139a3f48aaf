"""Same batch, same weights: ``marl``'s learner under ``preset=epymarl`` against EPyMARL's own ``QLearner``.

    PYTHONPATH=src python scripts/epymarl_same_batch.py --epymarl /work/epymarl

Issue 25's first level of the side-by-side check. Run with ``marl``'s own interpreter (the one
``marl`` is installed in): EPyMARL's learner, controller, agent, mixers and episode batch need
only torch and numpy, so its ``src/`` is put on ``sys.path`` and nothing of its env stack
(sacred, smaclite, gymnasium wrappers) is imported. Never needed by CI; EPyMARL is read from the
checkout given, never copied into this project (uoe-agents/epymarl at cbc38c0:
``git archive cbc38c0 | tar -x -C DIR``).

For each of qmix, vdn and iql (``marl``'s ``mixer=none``) it

1. composes ``marl``'s config with ``preset=epymarl env=mpe mixer=<m>`` and builds the learner as
   ``Experiment._build`` does (``Policy``, ``MIXERS.build``, ``Learner``), on an MPE simple_spread
   sized spec (3 agents, 5 actions, obs 18, state 54, time limit 25);
2. builds EPyMARL's ``BasicMAC`` + ``QLearner`` from its ``default.yaml`` + ``algs/<alg>.yaml`` +
   ``envs/gymma.yaml`` (as ``main.py`` merges them), and copies ``marl``'s initial weights into it
   (feed-forward agent: ``net.0/2/4`` = ``fc1/rnn/fc2``, EPyMARL's ``use_rnn: False`` Linear; GRU
   agent: ``nn.GRU``'s ``*_l0`` = ``GRUCell``'s; QMixer: ``hyper_w1/hyper_w2/hyper_b1/v`` =
   ``hyper_w_1/hyper_w_final/hyper_b_1/V``) before ``QLearner`` deep-copies its targets;
3. draws one set of random episodes and writes each into both layouts: EPyMARL's ``EpisodeBatch``
   of T+1 slots filled as its ``EpisodeRunner`` fills them (obs/state/avail at 0..L, ``filled``
   0..L, a last action at slot L, a time-limit end stored *terminated* because ``gymma.py`` sets no
   ``episode_limit``), then cut to ``max_t_filled()`` as ``run.py`` does; ``marl``'s episode dict
   (T slots of actions/reward/terminated/filled, T+1 of obs/state/avail, a time-limit end stored
   truncated, i.e. not terminated, and made terminal by ``learner.time_limit_end=terminal``);
4. runs one update on each (``Learner.update``, ``QLearner.train``) and compares the loss, the
   targets (every real step), the target networks' next-step values and every parameter's
   gradient (after clipping, which both apply in place) and updated weight.

EPyMARL's targets are not returned by ``train``: they are read back from its own TD error, through
a gradient hook on the online mixer's output (``dL/dQ = 2 (Q - y) mask / mask.sum()``, so
``y = Q - dL/dQ * mask.sum() / 2`` on real steps). For IQL, EPyMARL has no mixer; an identity
module (no parameters) is put in the mixer's place after construction so that the same hooks see
``Q_i`` and the targets: ``q_learner.py`` then runs its ``if self.mixer is not None`` branch,
whose two calls return their input, so the arithmetic is unchanged. ``marl``'s targets are the
``MixerInput.targets`` its learner passes to ``marl.mixers.mix`` (wrapped here to record them).

Cases (each for qmix, vdn, iql):

- ``mixed``: half the episodes end at the time limit, half terminate earlier (padding in the batch),
  ``preset=epymarl`` as composed (reward standardisation on).
- ``mixed, standardise off``: the same with ``standardise_rewards`` off on both sides.
- ``full``: every episode reaches the time limit (some terminated by the task on the last step):
  no padding, standardisation on.
- ``early``: every episode terminates before the time limit, so EPyMARL's batch is cut to the
  longest of them (``max_t_filled``) while ``marl``'s keeps T slots: standardisation on.
- ``--updates N`` (default 205): N updates in a row on fresh batches of the ``full`` kind, target
  networks copied every 200 updates as each framework does (EPyMARL inside ``train``; ``marl``'s
  ``Every(200, grad_steps)`` as ``Experiment.learned`` calls it), with running reward statistics
  carried along; reports the largest relative difference of loss, and of the weights along the
  way; then the same in float64 on both sides (``--float64-control``), to tell rounding amplified by
  training from a real difference.

- ``mixed, marl with reward_stats_include_padding=false``: the one difference this script found.
  EPyMARL's running reward statistics also take in the zero rewards of padded steps
  (``rew_ms.update(batch["reward"][:, :-1])`` over the batch cut to its longest episode);
  ``preset=epymarl`` now sets ``learner.reward_stats_include_padding`` to do the same, and this
  case turns it off to show what it changes. The script prints both sides' reward mean/variance
  after the update, and marl's own statistics fed the padded steps, so the cause is visible.

Expected: float rounding only (~1e-7 relative in float32) in every case but the last. Over many
updates float32 rounding is amplified by training (a greedy action or ReLU that flips), so the
in-a-row cases are also run in float64, where the two stay together.
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch
import yaml

N_AGENTS, N_ACTIONS, OBS_DIM, T_LIMIT = 3, 5, 18, 25  # MPE simple_spread, EPyMARL's time limit 25
STATE_DIM = N_AGENTS * OBS_DIM  # gymma.py get_state: the observations concatenated
ALGS = {"qmix": "qmix", "vdn": "vdn", "iql": "none"}  # EPyMARL alg file -> marl mixer


# --------------------------------------------------------------------------------------------- EPyMARL
def import_epymarl(checkout: Path) -> SimpleNamespace:
    """EPyMARL's learner-side classes, imported from ``checkout/src`` (nothing of its env stack)."""
    src = checkout / "src"
    if not (src / "learners" / "q_learner.py").is_file():
        raise SystemExit(f"no EPyMARL checkout at {checkout}: {src / 'learners' / 'q_learner.py'} is missing "
                         "(extract uoe-agents/epymarl at cbc38c0 there, e.g. `git archive cbc38c0 | tar -x -C DIR`)")
    sys.path.insert(0, str(src))
    from components.episode_buffer import EpisodeBatch  # type: ignore[import-not-found]
    from components.transforms import OneHot  # type: ignore[import-not-found]
    from controllers.basic_controller import BasicMAC  # type: ignore[import-not-found]
    from learners.q_learner import QLearner  # type: ignore[import-not-found]
    return SimpleNamespace(EpisodeBatch=EpisodeBatch, OneHot=OneHot, BasicMAC=BasicMAC, QLearner=QLearner)


def epymarl_args(checkout: Path, alg: str, standardise: bool) -> SimpleNamespace:
    """``default.yaml`` <- ``envs/gymma.yaml`` <- ``algs/<alg>.yaml``, merged as ``main.py`` merges them,
    plus what ``run.py`` adds from the env (sizes) and device; ``learner_log_interval`` 0 so that
    every ``train`` logs its statistics."""
    cfg_dir = checkout / "src" / "config"
    cfg: dict[str, Any] = {}
    for path in (cfg_dir / "default.yaml", cfg_dir / "envs" / "gymma.yaml", cfg_dir / "algs" / f"{alg}.yaml"):
        for k, v in (yaml.safe_load(path.read_text()) or {}).items():
            cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    cfg.update(n_agents=N_AGENTS, n_actions=N_ACTIONS, state_shape=STATE_DIM, use_cuda=False, device="cpu",
               learner_log_interval=0, standardise_rewards=standardise and cfg["standardise_rewards"])
    return SimpleNamespace(**cfg)


class StatLogger:
    """Stands in for EPyMARL's ``Logger``: keeps the last value ``QLearner.train`` logged per key."""

    def __init__(self) -> None:
        self.stats: dict[str, float] = {}

    def log_stat(self, key: str, value: float, t: int, to_sacred: bool = True) -> None:
        self.stats[key] = float(value)


class IdentityMixer(torch.nn.Module):
    """No parameters, returns its input: stands where EPyMARL's IQL has no mixer, for the hooks."""

    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return agent_qs


@dataclass
class Episode:
    """One random episode: L steps; ``terminated`` True when the task ended it (else the time limit)."""

    obs: np.ndarray  # [L+1, n, obs]
    state: np.ndarray  # [L+1, state]
    avail: np.ndarray  # [L+1, n, A] 0/1
    actions: np.ndarray  # [L+1, n]: slot L holds the action EPyMARL's runner picks at the final obs
    reward: np.ndarray  # [L]
    terminated: bool


def random_episodes(rng: np.random.Generator, batch: int, kind: str) -> list[Episode]:
    """``mixed``: even episodes reach the time limit (truncated), odd ones terminate at a random
    earlier step. ``full``: every episode is T long, every fourth terminated by the task at T.
    ``early``: every episode terminates before the limit (EPyMARL cuts the batch shorter than T)."""
    out = []
    for i in range(batch):
        if kind in ("mixed", "early"):
            early = kind == "early" or i % 2 == 1
            length = int(rng.integers(3, T_LIMIT)) if early else T_LIMIT
            terminated = early
        else:
            length, terminated = T_LIMIT, i % 4 == 3
        avail = (rng.random((length + 1, N_AGENTS, N_ACTIONS)) < 0.7).astype(np.int64)
        avail[..., 0] = 1  # one action always available, as MPE's and LBF's no-op is
        actions = np.stack([[rng.choice(np.flatnonzero(a)) for a in step] for step in avail])
        out.append(Episode(obs=rng.normal(size=(length + 1, N_AGENTS, OBS_DIM)).astype(np.float32),
                           state=rng.normal(size=(length + 1, STATE_DIM)).astype(np.float32),
                           avail=avail, actions=actions,
                           reward=(rng.normal(size=length) - 1.0).astype(np.float32), terminated=terminated))
    return out


def epymarl_batch(ep: SimpleNamespace, episodes: list[Episode], dtype: torch.dtype = torch.float32) -> Any:
    """The episodes as EPyMARL's runner stores them, sampled and cut as ``run.py`` does.
    ``dtype``: of obs, state and reward (EPyMARL's default float32; float64 for the control run)."""
    scheme = {
        "state": {"vshape": STATE_DIM, "dtype": dtype},
        "obs": {"vshape": OBS_DIM, "group": "agents", "dtype": dtype},
        "actions": {"vshape": (1,), "group": "agents", "dtype": torch.long},
        "avail_actions": {"vshape": (N_ACTIONS,), "group": "agents", "dtype": torch.int},
        "terminated": {"vshape": (1,), "dtype": torch.uint8},
        "reward": {"vshape": (1,), "dtype": dtype},
    }
    preprocess = {"actions": ("actions_onehot", [ep.OneHot(out_dim=N_ACTIONS)])}
    batch = ep.EpisodeBatch(scheme, {"agents": N_AGENTS}, len(episodes), T_LIMIT + 1, preprocess=preprocess)
    for b, e in enumerate(episodes):
        # What episode_runner.py writes step by step, written per episode in three calls (same
        # content, far fewer EpisodeBatch.update calls): state/avail/obs at 0..L, which marks
        # `filled` 0..L (its last_data update fills slot L too); the actions at 0..L (slot L: the
        # action it selects "in the last stored state"); reward and terminated at 0..L-1, where
        # `terminated or truncated` is stored as terminated unless env_info["episode_limit"],
        # which gymma.py never sets: the last step is terminated whichever way the episode ended.
        L = len(e.reward)
        # (lists, as the runner passes them: EpisodeBatch.update converts lists to tensors.)
        batch.update({"state": list(e.state), "avail_actions": list(e.avail), "obs": list(e.obs)},
                     bs=b, ts=slice(0, L + 1))
        batch.update({"actions": list(e.actions[:, :, None])}, bs=b, ts=slice(0, L + 1), mark_filled=False)
        batch.update({"reward": list(e.reward[:, None]), "terminated": list((np.arange(L) == L - 1)[:, None])},
                     bs=b, ts=slice(0, L), mark_filled=False)
    return batch[:, :batch.max_t_filled()]  # run.py: "Truncate batch to only filled timesteps"


def marl_batch(episodes: list[Episode], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The episodes in ``marl``'s layout (``marl.buffers.episode_layout``), padded to T; obs, state
    and reward in ``dtype``."""
    B, T = len(episodes), T_LIMIT
    d = {"obs": torch.zeros(B, T + 1, N_AGENTS, OBS_DIM), "state": torch.zeros(B, T + 1, STATE_DIM),
         "avail": torch.zeros(B, T + 1, N_AGENTS, N_ACTIONS, dtype=torch.bool),
         "actions": torch.zeros(B, T, N_AGENTS, dtype=torch.long), "reward": torch.zeros(B, T),
         "terminated": torch.zeros(B, T, dtype=torch.bool), "filled": torch.zeros(B, T, dtype=torch.bool)}
    for b, e in enumerate(episodes):
        L = len(e.reward)
        d["obs"][b, :L + 1] = torch.from_numpy(e.obs)
        d["state"][b, :L + 1] = torch.from_numpy(e.state)
        d["avail"][b, :L + 1] = torch.from_numpy(e.avail).bool()
        d["actions"][b, :L] = torch.from_numpy(e.actions[:L])
        d["reward"][b, :L] = torch.from_numpy(e.reward)
        d["terminated"][b, L - 1] = e.terminated  # a time-limit end is stored truncated, not terminated
        d["filled"][b, :L] = True
    for k in ("obs", "state", "reward"):
        d[k] = d[k].to(dtype)
    return d


# ------------------------------------------------------------------------------------------------ marl
def build_marl(alg: str, standardise: bool, extra: tuple[str, ...] = ()) -> Any:
    """``marl``'s learner under ``preset=epymarl env=mpe`` (plus ``extra`` overrides), built as
    ``Experiment._build`` builds it."""
    from marl.config import compose
    from marl.envs.base import EnvSpec
    from marl.learner import Learner
    from marl.policy import Policy
    from marl.registry import MIXERS

    overrides = ["preset=epymarl", "env=mpe", f"mixer={ALGS[alg]}"]
    if not standardise:
        overrides.append("learner.standardise_rewards=false")
    cfg = compose([*overrides, *extra])
    assert cfg.learner.time_limit_end == "terminal", "preset=epymarl should treat MPE's time limit as terminal"
    spec = EnvSpec(n_agents=N_AGENTS, obs_dim=OBS_DIM, state_dim=STATE_DIM, n_actions=N_ACTIONS,
                   episode_limit=T_LIMIT, has_state=False)
    mixer = MIXERS.build(cfg.mixer, n_agents=spec.n_agents, state_dim=spec.state_dim)
    return Learner(Policy(spec, cfg.agent), mixer, cfg.learner, torch.device("cpu"), check_finite=True), cfg


def name_map(alg: str) -> dict[str, str]:
    """``marl`` parameter name -> EPyMARL parameter name (``agent.*`` of the mac, ``mixer.*``)."""
    if alg == "iql":
        m = {"fc1.weight": "fc1.weight", "fc1.bias": "fc1.bias", "fc2.weight": "fc2.weight", "fc2.bias": "fc2.bias",
             "rnn.weight_ih_l0": "rnn.weight_ih", "rnn.weight_hh_l0": "rnn.weight_hh",
             "rnn.bias_ih_l0": "rnn.bias_ih", "rnn.bias_hh_l0": "rnn.bias_hh"}
    else:
        m = {f"net.{i}.{p}": f"{n}.{p}" for i, n in ((0, "fc1"), (2, "rnn"), (4, "fc2")) for p in ("weight", "bias")}
    out = {f"agent.{k}": f"agent.{v}" for k, v in m.items()}
    if alg == "qmix":
        for mine, theirs in (("hyper_w1", "hyper_w_1"), ("hyper_w2", "hyper_w_final"), ("v", "V")):
            for i in (0, 2):
                for p in ("weight", "bias"):
                    out[f"mixer.{mine}.{i}.{p}"] = f"mixer.{theirs}.{i}.{p}"
        for p in ("weight", "bias"):
            out[f"mixer.hyper_b1.{p}"] = f"mixer.hyper_b_1.{p}"
    return out


def marl_params(learner: Any) -> dict[str, torch.nn.Parameter]:
    return {**{f"agent.{k.removeprefix('agent.')}": v for k, v in learner.policy.named_parameters()},
            **{f"mixer.{k}": v for k, v in learner.mixer.named_parameters()}}


def epymarl_params(mac: Any, mixer: torch.nn.Module | None) -> dict[str, torch.nn.Parameter]:
    out = {f"agent.{k}": v for k, v in mac.agent.named_parameters()}
    if mixer is not None:
        out.update({f"mixer.{k}": v for k, v in mixer.named_parameters()})
    return out


# --------------------------------------------------------------------------------------------- compare
def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a-b| relative to the larger magnitude of the two tensors (0 when both are 0)."""
    a, b = a.double(), b.double()
    scale = max(a.abs().max().item(), b.abs().max().item())
    return 0.0 if scale == 0 else (a - b).abs().max().item() / scale


class Pair:
    """marl's and EPyMARL's learners for one algorithm, built with the same initial weights, and
    instrumented so that one update yields both sides' loss, targets, next values and gradients."""

    def __init__(self, ep: SimpleNamespace, checkout: Path, alg: str, standardise: bool, seed: int,
                 dtype: torch.dtype = torch.float32, extra: tuple[str, ...] = ()) -> None:
        import marl.learner as marl_learner_module

        torch.manual_seed(seed)
        self.alg = alg
        self.marl, self.cfg = build_marl(alg, standardise, extra)
        args = epymarl_args(checkout, alg, standardise)
        self.args = args
        self.dtype = dtype
        scheme = epymarl_batch(ep, random_episodes(np.random.default_rng(0), 1, "full"), dtype).scheme
        mac = ep.BasicMAC(scheme, {"agents": N_AGENTS}, args)
        self.names = name_map(alg)
        # Copy before QLearner: its constructor deep-copies the mac and mixer into the targets.
        mixer_for_copy = None
        if alg in ("qmix", "vdn"):
            from modules.mixers.qmix import QMixer  # type: ignore[import-not-found]
            from modules.mixers.vdn import VDNMixer  # type: ignore[import-not-found]
            mixer_for_copy = QMixer(args) if alg == "qmix" else VDNMixer()
        theirs = epymarl_params(mac, mixer_for_copy)
        mine = marl_params(self.marl)
        assert set(self.names) == set(mine), f"unmapped marl parameters: {set(mine) ^ set(self.names)}"
        assert set(self.names.values()) == set(theirs), f"unmapped EPyMARL parameters: {set(theirs) ^ set(self.names.values())}"
        with torch.no_grad():
            for k, v in self.names.items():
                assert theirs[v].shape == mine[k].shape, f"{k} {tuple(mine[k].shape)} vs {v} {tuple(theirs[v].shape)}"
                theirs[v].copy_(mine[k])
        self.logger = StatLogger()
        self.ep = ep.QLearner(mac, scheme, self.logger, args)
        if mixer_for_copy is not None:  # QLearner built its own (random) mixer: load the copied weights
            self.ep.mixer.load_state_dict(mixer_for_copy.state_dict())
            self.ep.target_mixer.load_state_dict(mixer_for_copy.state_dict())
        else:  # IQL: identity mixers (no parameters) so the hooks below see Q_i and targets
            self.ep.mixer, self.ep.target_mixer = IdentityMixer(), IdentityMixer()
        self.ep.target_mac.load_state(mac)
        if dtype == torch.float64:  # (networks are float64 through torch's default dtype, in_a_row)
            if args.standardise_rewards:  # EPyMARL's RunningMeanStd is float32 by construction
                self.ep.rew_ms.mean = self.ep.rew_ms.mean.double()
                self.ep.rew_ms.var = self.ep.rew_ms.var.double()
        # Hooks: EPyMARL's online mixer output (and its gradient), its target mixer output.
        self.seen: dict[str, torch.Tensor] = {}

        def online_hook(_m: torch.nn.Module, _i: Any, out: torch.Tensor) -> None:
            self.seen["q"] = out.detach().clone()
            out.register_hook(lambda g: self.seen.__setitem__("dq", g.detach().clone()))

        self.ep.mixer.register_forward_hook(online_hook)
        self.ep.target_mixer.register_forward_hook(lambda _m, _i, out: self.seen.__setitem__("next", out.detach().clone()))
        # marl: record what its learner passes to marl.mixers.mix (the target call first, then the online one).
        # Wrap the original once per Pair (not a wrapper of an earlier Pair's wrapper).
        original_mix: Callable[..., Any] = getattr(marl_learner_module, "_unrecorded_mix", marl_learner_module.mix)
        marl_learner_module._unrecorded_mix = original_mix  # type: ignore[attr-defined]
        self.marl_seen: list[Any] = []

        def recording_mix(mixer: torch.nn.Module, x: Any) -> Any:
            out = original_mix(mixer, x)
            self.marl_seen.append((x, out))
            return out

        marl_learner_module.mix = recording_mix
        self.marl_step = 0
        from marl.clock import Clock, Every

        self.clock, self.target_schedule = Clock(), Every(self.cfg.learner.target_update_interval,
                                                          self.cfg.learner.target_update_unit)

    def update(self, episodes: list[Episode], ep: SimpleNamespace) -> dict[str, Any]:
        """One update of each side on the same episodes; returns the comparison."""
        eb, mb = epymarl_batch(ep, episodes, self.dtype), marl_batch(episodes, self.dtype)
        self.marl_seen.clear()
        before = {k: v.detach().clone() for k, v in marl_params(self.marl).items()}
        self.rs_before = copy.deepcopy(self.marl.reward_scaling)
        m_stats = self.marl.update(mb)
        self.clock.grad_steps += 1  # as Experiment.learned: count, then copy the targets when due
        if self.target_schedule.due(self.clock):
            self.marl.update_targets()
        self.marl_step += 1
        self.ep.train(eb, t_env=0, episode_num=0)
        s = self.logger.stats
        (_, m_next), (m_in, m_out) = self.marl_seen[-2], self.marl_seen[-1]
        filled = mb["filled"]
        # EPyMARL's mask: filled[:, :-1] with steps after a termination removed; real steps only.
        ep_mask = eb["filled"][:, :-1].float()
        ep_term = eb["terminated"][:, :-1].float()
        ep_mask[:, 1:] = ep_mask[:, 1:] * (1 - ep_term[:, :-1])
        Tb = ep_mask.shape[1]
        assert torch.equal(ep_mask[..., 0].bool(), filled[:, :Tb]) and not filled[:, Tb:].any(), "masks differ"
        n_real = ep_mask.expand_as(self.seen["q"]).sum()
        y_ep = self.seen["q"] - self.seen["dq"] * n_real / 2  # targets implied by EPyMARL's own TD error
        real = filled[:, :Tb]
        y_marl = m_in.targets[:, :Tb][real]
        mp, epp = marl_params(self.marl), epymarl_params(self.ep.mac, self.ep.mixer)
        grads = {k: rel(mp[k].grad, epp[v].grad) for k, v in self.names.items()}
        weights = {k: rel(mp[k].detach(), epp[v].detach()) for k, v in self.names.items()}
        moved = max(rel(mp[k].detach(), before[k]) for k in self.names)
        out = {
            "loss_marl": float(m_stats["loss"]), "loss_ep": s["loss"],
            "loss_rel": abs(float(m_stats["loss"]) - s["loss"]) / abs(s["loss"]),
            "grad_norm_marl": float(m_stats["grad_norm"]), "grad_norm_ep": s["grad_norm"],
            # EPyMARL divides its logged means by n_agents once more (q_learner.py): multiplied back
            "q_taken_marl": float(m_stats["q_taken_mean"]), "q_taken_ep": s["q_taken_mean"] * N_AGENTS,
            "target_mean_marl": float(m_stats["target_mean"]), "target_mean_ep": s["target_mean"] * N_AGENTS,
            "targets_rel": rel(y_marl, y_ep[real]),
            "next_rel": rel(m_next.q_tot[:, :Tb][real], self.seen["next"][real]),
            "q_rel": rel(m_out.q_tot[:, :Tb][real], self.seen["q"][real]),
            "grad_rel": max(grads.values()), "grad_worst": max(grads, key=grads.__getitem__),
            "weight_rel": max(weights.values()), "weights_moved": moved,
        }
        if self.marl.reward_scaling is not None:
            rs = self.marl.reward_scaling
            out["reward_stats"] = (f"reward mean/var after the update: marl {rs.mean.item():.6g}/{rs.var.item():.6g}, "
                                   f"EPyMARL {self.ep.rew_ms.mean.item():.6g}/{self.ep.rew_ms.var.item():.6g}")
            # The cause, shown: marl's own RunningMeanStd, before this update, fed every slot of the
            # cut batch (padding included) as EPyMARL's rew_ms.update(batch["reward"][:, :-1]) is.
            padded = copy.deepcopy(self.rs_before)
            padded.update(eb["reward"][:, :-1, 0], torch.ones_like(eb["reward"][:, :-1, 0], dtype=torch.bool))
            out["reward_stats"] += (f"; marl's RunningMeanStd fed the padded steps too: "
                                    f"{padded.mean.item():.6g}/{padded.var.item():.6g}")
        return out


def report(alg: str, case: str, r: dict[str, Any]) -> None:
    print(f"  {alg:4s} {case}: loss marl {r['loss_marl']:.7g} EPyMARL {r['loss_ep']:.7g} (rel {r['loss_rel']:.1e}); "
          f"largest rel diff: gradients {r['grad_rel']:.1e} ({r['grad_worst']}), targets {r['targets_rel']:.1e}, "
          f"next values {r['next_rel']:.1e}, Q {r['q_rel']:.1e}, weights after the step {r['weight_rel']:.1e}")
    print(f"       grad norm marl {r['grad_norm_marl']:.6g} EPyMARL {r['grad_norm_ep']:.6g}; Q_tot mean marl "
          f"{r['q_taken_marl']:.6g} EPyMARL {r['q_taken_ep']:.6g}; target mean marl {r['target_mean_marl']:.6g} "
          f"EPyMARL {r['target_mean_ep']:.6g}")
    if "reward_stats" in r:
        print(f"       {r['reward_stats']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epymarl", type=Path, required=True, help="an EPyMARL checkout (uoe-agents/epymarl at cbc38c0)")
    parser.add_argument("--algs", default="qmix,vdn,iql")
    parser.add_argument("--updates", type=int, default=205, help="updates in a row for the multi-update case (0: skip)")
    parser.add_argument("--batch-size", type=int, default=32, help="episodes per batch (EPyMARL's batch_size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--float64-control", action=argparse.BooleanOptionalAction, default=True,
                        help="repeat the updates in a row with both sides in float64")
    args = parser.parse_args()
    # EPyMARL's EpisodeBatch indexes with lists and views (torch deprecation warnings, not ours).
    warnings.filterwarnings("ignore", category=UserWarning)
    ep = import_epymarl(args.epymarl)
    torch.set_num_threads(1)
    for alg in args.algs.split(","):
        print(f"{alg} (EPyMARL algs/{alg}.yaml vs marl preset=epymarl env=mpe mixer={ALGS[alg]})")
        no_padding = ("learner.reward_stats_include_padding=false",)
        for case, kind, standardise, extra in (
                ("mixed", "mixed", True, ()), ("mixed, standardise off", "mixed", False, ()),
                ("full", "full", True, ()), ("early", "early", True, ()),
                ("mixed, marl with reward_stats_include_padding=false", "mixed", True, no_padding)):
            pair = Pair(ep, args.epymarl, alg, standardise, args.seed, extra=extra)
            rng = np.random.default_rng(args.seed + 1)
            report(alg, case, pair.update(random_episodes(rng, args.batch_size, kind), ep))
        if args.updates:
            dtypes = (torch.float32, torch.float64) if args.float64_control else (torch.float32,)
            for dtype in dtypes:
                in_a_row(ep, args, alg, dtype)


def in_a_row(ep: SimpleNamespace, args: argparse.Namespace, alg: str, dtype: torch.dtype) -> None:
    """``args.updates`` updates in a row on fresh ``full`` batches, reward statistics and target
    copies carried along; prints how the two sides drift apart. The float64 run is the control:
    if the float32 drift is rounding amplified by training (Adam divides by the root of small
    second moments, ReLUs switch), it shrinks by orders of magnitude there; a real difference
    between the frameworks would not. (In float64 EPyMARL's ``gamma * (1 - terminated)`` is still
    float32, as its ``terminated`` is ``.float()``, so there the two agree to ~1e-8 per update,
    not ~1e-16: γ is 0.99 rounded to float32 on its side.)"""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # every network, hidden state and buffer of both sides in dtype
    try:
        pair = Pair(ep, args.epymarl, alg, True, args.seed, dtype)
        rng = np.random.default_rng(args.seed + 2)
        results = [pair.update(random_episodes(rng, args.batch_size, "full"), ep) for _ in range(args.updates)]
    finally:
        torch.set_default_dtype(previous)
    worst = max(range(len(results)), key=lambda i: results[i]["loss_rel"])
    name = str(dtype).removeprefix("torch.")
    print(f"  {alg:4s} {args.updates} updates in a row, {name} (full batches, targets copied after update 200 "
          f"on both sides): largest loss rel diff {results[worst]['loss_rel']:.1e} (update {worst + 1}), "
          f"largest gradient rel diff {max(r['grad_rel'] for r in results):.1e}, weights at the end "
          f"{results[-1]['weight_rel']:.1e}; last loss marl {results[-1]['loss_marl']:.6g} "
          f"EPyMARL {results[-1]['loss_ep']:.6g}")
    marks = [i for i in (1, 10, 50, 100, 150, 200, 201, len(results)) if i <= len(results)]
    print("       weights' largest rel diff after update " +
          ", ".join(f"{i}: {results[i - 1]['weight_rel']:.1e}" for i in dict.fromkeys(marks)))
    if "reward_stats" in results[-1]:
        print(f"       {results[-1]['reward_stats']}")


if __name__ == "__main__":
    main()
