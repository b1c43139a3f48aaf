"""The training loop: build the components, collect, learn, evaluate, log, checkpoint, resume.

Read top to bottom, :func:`run` is the whole algorithm. Every schedule names its unit and the
number of gradient steps per collected episode does not depend on ``num_envs``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from marl import preemption
from marl.allocator import keep_freed_memory
from marl.buffers import Episodes
from marl import run_folder
from marl.checkpoint import load_latest, rng_state, save_atomic, seed_everything, set_rng_state
from marl.clock import Clock, Every, LinearSchedule
from marl.config import RESUME_MAY_CHANGE, Unit, flatten, validate, with_schema_defaults
from marl.envs.base import EnvSpec, derive_seeds
from marl.errors import ConfigError, NonFiniteError, RunFailed, RunFolderError, ValueBoundError
from marl.learner import Learner
from marl.logger import ConsoleSink, Logger, Sink, WandbSink
from marl.policy import Policy
from marl.registry import BUFFERS, ENVS, MIXERS
from marl.runlock import RunLock
from marl.run_folder import (CHECKPOINT_FILE, CONFIG_FILE, ERROR_LOG, METRICS_FILE, SEEDS_FILE, SPEC_FILE,  # noqa: F401
                             STATUS_FILE, JsonlSink)
from marl.runner import Runner, evaluate
from marl.value_guard import ValueGuard


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} is invalid: CUDA is not available here; use device=auto or cpu")
    return torch.device(name)


def check_capabilities(cfg: DictConfig, spec: EnvSpec, mixer: Any) -> None:
    """What the chosen components need from the env, checked before the first step."""
    if getattr(mixer, "needs_state", False) and spec.state_dim == 0:
        raise ConfigError(f"mixer.name={cfg.mixer.name!r} mixes with the global state, but env.name="
                          f"{cfg.env.name!r} has none: choose mixer=vdn or mixer=none, or give the env a state")
    if getattr(mixer, "needs_state", False) and not spec.has_state:
        print(f"Note: env.name={cfg.env.name!r} has no global state of its own; mixer.name={cfg.mixer.name!r} "
              "mixes on the concatenation of the agents' observations (as EPyMARL does).", file=sys.stderr)
    if not spec.shared_reward:
        raise ConfigError(f"env.name={cfg.env.name!r} gives each agent its own reward; the value-decomposition "
                          "learners need one team reward: set the env's team-reward option")


def run_label(cfg: DictConfig) -> str:
    return f"{cfg.env.name} {cfg.mixer.name} seed={cfg.seed}"


class AlreadyFinished(Exception):
    """The folder holds a finished run: nothing to do. Without a checkpoint (results kept without
    them) starting afresh would truncate its metrics; with one at ``t_max``, a repeat of the final
    evaluation would append duplicate records. A larger ``t_max`` continues the run."""

    def __init__(self, run_dir: Path, result: dict[str, float]) -> None:
        super().__init__(f"{run_dir} holds a finished run (its metrics.jsonl has the final record); "
                         "nothing to do. Use another folder to train it again.")
        self.result = result


class Experiment:
    """All components of one run, built from its config. ``train`` runs it to ``t_max``.

    Construction refuses before it writes: validate the config, take the run folder's lock, choose
    the checkpoint, check that it may be resumed, build the components (which checks what they
    need of the env); only then, the start accepted, write the folder's files (Hydra's through
    ``on_start``, config.yaml, seeds.json, spec.json), open the logs and restore the checkpoint.
    :meth:`close` releases the folder; :meth:`train` calls it when it ends, however it ends.
    """

    def __init__(self, cfg: DictConfig, sinks: list[Sink] | None = None, run_dir: Path | None = None,
                 on_start: Callable[[], None] | None = None) -> None:
        validate(cfg)
        self.cfg = cfg
        # run_dir: a member of a vectorised group runs in its own folder, whose config keeps the
        # standalone run's ``run_dir`` interpolation. on_start: writes the run's command-line record
        # (Hydra's .hydra/ for a plain run, a member's overrides for a seed group) once the start is
        # accepted, before the run's own files.
        self.run_dir = Path(run_dir or cfg.resume or cfg.run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Everything that can refuse the start runs before the first byte is written, so that a
        # refused start leaves the folder as it was (docs/architecture.md, "The data path", step 3).
        self.lock = RunLock(self.run_dir, cfg.faults.lock_wait_s, announce=False)  # invariant 9: one writer
        try:
            state = load_latest(self.run_dir)
            reached = state is not None and state["clock"][Unit(cfg.t_max_unit).value] >= int(cfg.t_max)
            if (state is None or reached) and (final := run_folder.finished_result(self.run_dir)) is not None:
                raise AlreadyFinished(self.run_dir, final)
            if state:
                check_resumable(cfg, self.run_dir)
            self._build(cfg)
            # Accepted: from here on the run writes its folder.
            self.lock.announce()
            if on_start is not None:
                on_start()
            self._write_start_files(cfg)
            self.jsonl = JsonlSink(self.run_dir / METRICS_FILE,
                                   offset=state["logger"]["jsonl_offset"] if state else 0)
            self.logger = Logger([self.jsonl] + (sinks if sinks is not None else self._default_sinks()),
                                 elapsed=state["logger"].get("time", 0.0) if state else 0.0)
            if state:
                self._restore(state)
        except BaseException:
            for env in (getattr(self, "env", None), getattr(self, "eval_env", None)):
                if env is not None:
                    env.close()  # a refusal after the envs were built (check_capabilities): no stray workers
            self.lock.release()
            raise

    def _write_start_files(self, cfg: DictConfig) -> None:
        """The run's record of itself: its config, seeds and env spec; a new attempt is no longer failed."""
        OmegaConf.save(cfg, self.run_dir / CONFIG_FILE)
        run_folder.write_json(self.run_dir, SEEDS_FILE, self.seeds)  # every RNG, recorded
        run_folder.write_json(self.run_dir, SPEC_FILE, dataclasses.asdict(self.spec))
        run_folder.clear_failure(self.run_dir)

    def _build(self, cfg: DictConfig) -> None:
        torch.set_num_threads(cfg.threads)
        keep_freed_memory()
        seed_everything(cfg.seed)
        self.device = resolve_device(cfg.device)
        train_seed, eval_seed = derive_seeds(cfg.seed, 2, "envs")
        self.seeds = {"root": cfg.seed, "train_env": train_seed, "eval_env": eval_seed,
                      "act": cfg.seed + 1, "sample": cfg.seed + 2}
        self.env = ENVS.build(cfg.env, num_envs=cfg.num_envs, seed=train_seed)
        self.eval_env = ENVS.build(cfg.env, num_envs=min(cfg.eval.num_envs, cfg.eval.episodes), seed=eval_seed)
        spec = self.spec = self.env.spec
        mixer = MIXERS.build(cfg.mixer, n_agents=spec.n_agents, state_dim=spec.state_dim)
        check_capabilities(cfg, spec, mixer)
        finite = bool(cfg.faults.check_finite)
        self.learner = Learner(Policy(spec, cfg.agent), mixer, cfg.learner, self.device, check_finite=finite)
        self.buffer = BUFFERS.build(cfg.buffer, spec=spec)
        self.generators = {"act": torch.Generator(self.device).manual_seed(self.seeds["act"]),
                           "sample": torch.Generator().manual_seed(self.seeds["sample"])}
        self.runner = Runner(self.env, self.learner.policy, self.device, self.generators["act"], check_finite=finite)
        self.eval_runner = Runner(self.eval_env, self.learner.policy, self.device, self.generators["act"],
                                  record=False, check_finite=finite)
        self.clock = Clock()
        self.epsilon = LinearSchedule(cfg.epsilon.start, cfg.epsilon.finish, cfg.epsilon.anneal, cfg.epsilon.unit)
        self.schedules = {
            "target": Every(cfg.learner.target_update_interval, cfg.learner.target_update_unit),
            "eval": Every(cfg.eval.interval, cfg.eval.unit),
            "log": Every(cfg.logger.interval, cfg.logger.unit),
            "checkpoint": Every(cfg.checkpoint.interval, cfg.checkpoint.unit),
        }
        self.pending_updates = 0.0
        self.value_guard = (ValueGuard(cfg.learner.gamma, cfg.faults.value_bound_margin)
                            if cfg.faults.value_bound != "off" else None)
        self.evaluated_at = -1  # env step of the last periodic eval (the final eval skips a repeat)
        self.saved_at: int | None = None  # env step of the newest checkpoint this process wrote or read
        self.window = self._empty_window()
        self.checkpoint_path = self.run_dir / CHECKPOINT_FILE
        self.render = self._training_render(cfg)

    def _training_render(self, cfg: DictConfig) -> Any:
        """The opt-in render of one greedy episode every ``render.interval`` (marl.render.training)."""
        if not OmegaConf.select(cfg, "render.interval", default=0):
            return None
        from marl.render.training import TrainingRender

        return TrainingRender(cfg, self.run_dir, self.device)

    def close(self) -> None:
        """Flush and close the logs and envs, then release the run folder."""
        try:
            self.logger.close()
            self.env.close()
            self.eval_env.close()
        finally:
            self.lock.release()

    def _default_sinks(self) -> list[Sink]:
        cfg = self.cfg
        sinks: list[Sink] = []
        if cfg.logger.console:
            sinks.append(ConsoleSink(run_label(cfg), cfg.t_max, cfg.t_max_unit.value
                                     if hasattr(cfg.t_max_unit, "value") else str(cfg.t_max_unit)))
        if cfg.logger.wandb.mode != "disabled":
            from marl.wandb_naming import wandb_identity

            ident = wandb_identity(cfg, self.run_dir)
            sinks.append(WandbSink(self.run_dir, OmegaConf.to_container(cfg, resolve=True), cfg.logger.wandb,
                                   **ident))
        return sinks

    @staticmethod
    def _empty_window() -> dict[str, Any]:
        return {"returns": [], "lengths": [], "stats": {}, "updates": 0, "t0": time.time(), "steps0": 0}

    # --- the loop -------------------------------------------------------------------------
    def train(self) -> dict[str, float]:
        try:
            while not self.done():
                self._collect_and_learn()
                self.after_step()
            return self.finish()
        except preemption.Preempted:
            raise
        except Exception as exc:
            failure = self.fail(exc)
            if failure is exc:
                raise
            raise failure from exc
        finally:
            self.close()

    def done(self) -> bool:
        return self.clock[Unit(self.cfg.t_max_unit)] >= int(self.cfg.t_max)

    def after_step(self) -> None:
        """The schedules that follow each collection step: log, evaluate, checkpoint, stop if asked."""
        cfg, clock = self.cfg, self.clock
        if self.schedules["log"].due(clock):
            self._log_train()
        if self.schedules["eval"].due(clock):
            self.logger.log(clock, evaluate(self.eval_runner, cfg.eval.episodes))
            self.evaluated_at = clock.env_steps
        if self.render is not None and self.render.due(clock):
            self.render(clock, self.learner.policy, self.logger.sinks)
        if self.schedules["checkpoint"].due(clock):
            self.save()
        if preemption.requested():
            self.save()
            raise preemption.Preempted(f"stopped at {clock.as_dict()} with a checkpoint")

    def finish(self) -> dict[str, float]:
        """The final greedy evaluation, the end-of-run record and the last checkpoint."""
        clock = self.clock
        final = evaluate(self.eval_runner, self.cfg.eval.episodes)
        if self.evaluated_at != clock.env_steps:  # else the periodic eval just ran on the same step
            self.logger.log(clock, final)
        self.logger.log(clock, {"final": 1.0})
        self.save()
        return final

    def fail(self, exc: Exception) -> Exception:
        """Record ``exc`` as the run's failure; return the exception to raise (divergence gets context)."""
        failure = NonFiniteError(self._diverged(exc)) if isinstance(exc, NonFiniteError) else exc
        self._record_failure(failure)
        return failure

    def _diverged(self, exc: NonFiniteError) -> str:
        lr, clip = self.cfg.learner.lr, self.cfg.learner.grad_clip
        kept = (f"the last good checkpoint ({CHECKPOINT_FILE}, env_steps={self.saved_at}) is untouched"
                if self.saved_at is not None else "no checkpoint had been written yet")
        return (f"training diverged at " + ", ".join(f"{k}={v}" for k, v in self.clock.as_dict().items())
                + f": {exc}. Likely causes: a learning rate too high (learner.lr={lr:g}), rewards too large "
                f"for the network (rescale them, or learner.standardise_rewards=true), or loose gradient "
                f"clipping (learner.grad_clip={clip:g}); {kept}. faults.check_finite=false turns this check off.")

    def _record_failure(self, exc: BaseException) -> None:
        """The run's status, in every place a reader looks: metrics.jsonl, status.json, W&B, error.log.

        Best effort: on a full disk some of these writes fail too, and must not hide the error.
        """
        try:
            self.logger.log(self.clock, {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"})
        except Exception:
            pass
        run_folder.record_failure(self.run_dir, exc, self.clock.as_dict())

    def _collect_and_learn(self) -> None:
        for _ in range(self.collect()):
            self.learned(self.learner.update(self.sample()))

    def collect(self, acted: tuple[torch.Tensor, torch.Tensor] | None = None) -> int:
        """One acting step of every env; finished episodes go to the buffer. Returns how many
        gradient steps are now due (``updates_per_episode`` per finished episode, whatever
        ``num_envs`` is): :meth:`learned` is called once after each of them. ``acted``: the
        policy's output, when a vectorised group computed it for all its members."""
        cfg, clock = self.learner.cfg, self.clock  # the learner's plain copy: cheap to read
        res = self.runner.step(self.epsilon(clock), acted)
        clock.env_steps += res.n_steps
        if res.episodes is None:
            return 0
        n_done = res.returns.numel()
        clock.episodes += n_done
        self.buffer.insert(res.episodes)
        if self.value_guard is not None:
            self.value_guard.observe(res.episodes["reward"], res.episodes["filled"])
        self.window["returns"] += res.returns.tolist()
        self.window["lengths"] += res.lengths.tolist()
        due = 0
        if self.buffer.can_sample(cfg.batch_size):
            self.pending_updates += n_done * cfg.updates_per_episode
            while self.pending_updates >= 1.0:
                self.pending_updates -= 1.0
                due += 1
        elif self.schedules["target"].due(clock):
            self.learner.update_targets()
        return due

    def sample(self) -> Episodes:
        return self.buffer.sample(self.learner.cfg.batch_size, self.generators["sample"])

    def learned(self, stats: dict[str, Any]) -> None:
        """Count one gradient step, keep its statistics for the log, update targets when due."""
        self.clock.grad_steps += 1
        self.window["updates"] += 1
        for k, v in stats.items():
            self.window["stats"][k] = self.window["stats"].get(k, 0.0) + v
        if self.schedules["target"].due(self.clock):
            self.learner.update_targets()

    def _log_train(self) -> None:
        w, clock = self.window, self.clock
        now = time.time()
        metrics: dict[str, float] = {"epsilon": self.epsilon(clock),
                                     "steps_per_sec": (clock.env_steps - w["steps0"]) / max(now - w["t0"], 1e-9)}
        if w["returns"]:
            metrics["train/return_mean"] = sum(w["returns"]) / len(w["returns"])
            metrics["train/length_mean"] = sum(w["lengths"]) / len(w["lengths"])
        if w["updates"]:
            metrics.update({k: float(v) / w["updates"] for k, v in w["stats"].items()})
        breach = self._value_breach(metrics)
        self.logger.log(clock, metrics)
        self.window = self._empty_window()
        self.window["steps0"] = clock.env_steps
        if breach is not None and self.cfg.faults.value_bound == "fail":
            raise ValueBoundError(breach)

    def _value_breach(self, metrics: dict[str, float]) -> str | None:
        """Check the window's mean learned value against :class:`ValueGuard`'s bound; a breach is
        added to ``metrics`` (so it reaches metrics.jsonl and W&B) and said once on the console.
        Returns the message when the value is out of bounds."""
        if self.value_guard is None or "q_taken_mean" not in metrics:
            return None
        q = metrics["q_taken_mean"]
        bound = self.value_guard.breach(q, self.learner.reward_scaling)
        if bound is None:
            return None
        metrics.update({run_folder.VALUE_BOUND_KEY: 1.0, "value_bound_low": bound[0], "value_bound_high": bound[1]})
        scale = " (standardised rewards)" if self.learner.reward_scaling is not None else ""
        message = (f"the learned value has left the range no sound learner leaves at "
                   + ", ".join(f"{k}={v}" for k, v in self.clock.as_dict().items())
                   + f": q_taken_mean={q:.4g} outside [{bound[0]:.4g}, {bound[1]:.4g}] = [min(r, 0), max(r, 0)]/(1-γ) "
                   f"with γ={self.cfg.learner.gamma:g}{scale}, widened by faults.value_bound_margin="
                   f"{self.cfg.faults.value_bound_margin:g}. The value is diverging although it is finite. Likely "
                   f"causes: bootstrapping a long horizon through a state-conditioned mixer (QMIX on MPE: "
                   f"docs/results.md), a learning rate too high (learner.lr={self.cfg.learner.lr:g}), loose gradient "
                   f"clipping (learner.grad_clip={self.cfg.learner.grad_clip:g}); faults.value_bound=fail stops such "
                   f"a run, =off turns the check off")
        if not self.value_guard.warned and self.cfg.faults.value_bound != "fail":  # fail: said as the failure
            self.value_guard.warned = True
            print(f"Warning [{run_label(self.cfg)}]: {message}.", file=sys.stderr, flush=True)
        return message

    # --- checkpoints ----------------------------------------------------------------------
    def save(self) -> None:
        buffer_ok = self.cfg.checkpoint.save_buffer and self.buffer.nbytes() <= self.cfg.checkpoint.buffer_max_mb * 2**20
        state = {
            "version": 1,
            "clock": self.clock.as_dict(),
            "schedules": {k: s.state_dict() for k, s in self.schedules.items()},
            "learner": self.learner.state_dict(),
            "buffer": self.buffer.state_dict() if buffer_ok else None,
            "runner": self.runner.state_dict(),
            "eval_env": self.eval_env.state_dict(),
            "evaluated_at": self.evaluated_at,
            "rng": rng_state(self.generators),
            "pending_updates": self.pending_updates,
            "value_guard": self.value_guard.state_dict() if self.value_guard is not None else None,
            "window": {k: v for k, v in self.window.items() if k not in ("t0",)},
            "logger": {"jsonl_offset": self.jsonl.offset, "time": self.logger.elapsed()},
            "seeds": self.seeds,
        }
        if self.render is not None:  # the opt-in training render's next firing point
            state["render"] = self.render.state_dict()
        save_atomic(state, self.checkpoint_path)
        self.saved_at = self.clock.env_steps

    def _restore(self, state: dict[str, Any]) -> None:
        self.clock = Clock(**state["clock"])
        for k, s in self.schedules.items():
            s.load_state_dict(state["schedules"][k])
        self.learner.load_state_dict(state["learner"])
        if state["buffer"] is not None:
            self.buffer.load_state_dict(state["buffer"])
        self.runner.load_state_dict(state["runner"])
        if state.get("eval_env"):
            self.eval_env.load_state_dict(state["eval_env"])
        self.evaluated_at = state.get("evaluated_at", -1)
        if self.value_guard is not None and state.get("value_guard"):  # older checkpoints have none
            self.value_guard.load_state_dict(state["value_guard"])
        if self.render is not None and state.get("render"):
            self.render.load_state_dict(state["render"])
        set_rng_state(state["rng"], self.generators)
        self.pending_updates = state["pending_updates"]
        self.window = {**state["window"], "t0": time.time()}
        self.saved_at = self.clock.env_steps
        print(f"Resuming {self.run_dir} from its checkpoint at " + ", ".join(f"{k}={v}" for k, v in
              self.clock.as_dict().items()), file=sys.stderr, flush=True)


def check_resumable(cfg: DictConfig, run_dir: Path) -> None:
    """Refuse to resume a run with a different algorithm, env or seed than the one in its folder.

    Loading the checkpoint into differently shaped networks would fail obscurely, and into the
    same shapes with other settings would silently mix two experiments.
    """
    saved_file = run_dir / CONFIG_FILE
    if not saved_file.exists():
        return
    old = flatten(OmegaConf.to_container(with_schema_defaults(OmegaConf.load(saved_file)), resolve=False))
    new = flatten(OmegaConf.to_container(cfg, resolve=False))
    diffs = [f"{key}={old.get(key)!r} in the folder, {new.get(key)!r} now"
             for key in sorted(set(old) | set(new))
             if key.split(".")[0] not in RESUME_MAY_CHANGE and old.get(key) != new.get(key)]
    if diffs:
        raise ConfigError(f"resume={str(run_dir)!r}: the run in this folder was configured differently ("
                          + "; ".join(diffs) + f"). Pass the same overrides as that run (see {saved_file}); "
                          f"only {', '.join(RESUME_MAY_CHANGE)} may change.")


REFUSALS = (ConfigError, RunFolderError)  # a start refused before training: exit code 2, the folder kept


def report_refusal(exc: ConfigError | RunFolderError) -> None:
    """The one line a refused start prints: a plain run's (launch.py) and a seed group's member's."""
    what = "Config error" if isinstance(exc, ConfigError) else "Cannot start the run"
    print(f"{what}: {exc}", file=sys.stderr, flush=True)


def report_failure(cfg: DictConfig, run_dir: Path, exc: BaseException) -> None:
    """The two lines a failed run prints, the same for a plain run (launch.py) and a seed group's
    member: what failed, and where its status and traceback are. A failure that the run did not
    record itself (it failed before training) is recorded in ``run_dir`` first."""
    if not isinstance(exc, RunFailed) and run_dir.is_dir() and not (run_dir / run_folder.STATUS_FILE).exists():
        run_folder.record_failure(run_dir, exc)
    print(f"Run failed [{run_label(cfg)}]: {type(exc).__name__}: {exc}\n"
          f"  Recorded as failed in {run_dir / run_folder.STATUS_FILE}; traceback in {run_dir / run_folder.ERROR_LOG}.",
          file=sys.stderr, flush=True)


def run(cfg: DictConfig, sinks: list[Sink] | None = None, on_start: Callable[[], None] | None = None) -> dict[str, float]:
    """Train one run in ``cfg.run_dir`` (resuming from its checkpoint if it has one).

    A folder that holds a finished run without a checkpoint is left as it is, so that a sweep
    relaunched over committed results trains only the runs that are missing.
    """
    try:
        experiment = Experiment(cfg, sinks=sinks, on_start=on_start)
    except AlreadyFinished as done:
        print(done, file=sys.stderr, flush=True)
        return done.result
    return experiment.train()
