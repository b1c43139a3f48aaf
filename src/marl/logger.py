"""One Logger, several sinks, one step axis.

Every record carries the three clocks (``env_steps``, ``episodes``, ``grad_steps``) and the wall
time, and goes to every sink: the console progress line, ``metrics.jsonl`` in the run folder
(flushed per record, so nothing is lost on a crash) and W&B (offline without an API key or
network; a W&B failure is reported once and never stops training).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import string
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from urllib.parse import urlsplit

from marl.clock import Clock
from marl.run_folder import METRICS_FILE, WANDB_ID_FILE, JsonlSink  # noqa: F401  (the metrics.jsonl sink)


class Sink(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class ConsoleSink:
    """A progress line per record: steps, returns, speed and ETA toward ``t_max``."""

    def __init__(self, label: str, t_max: int, unit: str) -> None:
        self.label, self.t_max, self.unit = label, t_max, unit
        self.start = time.time()
        self.first: dict[str, Any] | None = None
        self.last_eval: float | None = None

    def write(self, record: dict[str, Any]) -> None:
        if record.get("final") or "status" in record:
            return  # the end-of-run marker repeats the last line; a failure is reported by launch.py
        if self.first is None:
            self.first = record
        if "eval/return_mean" in record:
            self.last_eval = record["eval/return_mean"]
        done = record[self.unit]
        elapsed = max(record["time"] - self.first["time"], 1e-9)
        rate = (record["env_steps"] - self.first["env_steps"]) / elapsed
        frac = min(done / self.t_max, 1.0)
        progress = (done - self.first[self.unit]) / elapsed
        eta = (self.t_max - done) / progress if progress > 0 else float("nan")
        parts = [f"[{self.label}] {done}/{self.t_max} {self.unit} ({100 * frac:.0f}%)",
                 f"ep {record['episodes']}"]
        if "train/return_mean" in record:
            parts.append(f"return {record['train/return_mean']:.3g}")
        if self.last_eval is not None:
            parts.append(f"eval {self.last_eval:.3g}")
        if "loss" in record:
            parts.append(f"loss {record['loss']:.3g}")
        if rate > 0:  # the first line has nothing to measure a rate against
            parts.append(f"{rate:.0f} steps/s")
        if eta == eta:
            parts.append(f"ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}")
        print(" | ".join(parts), file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def wandb_mode(requested: str) -> str:
    """``auto`` is online only with an API key and a reachable server, offline otherwise.

    Without a key no network call is made (a laptop or a compute node without internet starts at
    once). ``WANDB_MODE`` in the environment (``offline``, ``disabled``, ``online``) is honoured
    for ``auto``, as W&B users expect.
    """
    if requested != "auto":
        return requested
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if env_mode in ("offline", "dryrun"):
        return "offline"
    if env_mode in ("disabled", "online"):
        return env_mode
    if not os.environ.get("WANDB_API_KEY") and not _netrc_has_wandb():
        return "offline"
    url = urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((url.hostname or "api.wandb.ai", port), timeout=2).close()
        return "online"
    except (OSError, ValueError):
        return "offline"


def new_run_id() -> str:
    """A fresh W&B run id (8 lowercase letters and digits, W&B's own format)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _netrc_has_wandb() -> bool:
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


class WandbSink:
    """Logs to a W&B run stored in the run folder; resumes the run whose id is saved there.

    The config is passed nested (``{"mixer": {"name": ...}}``): W&B stores nested dicts as such
    and shows them in the UI, filters and report group-bys as dotted keys (``mixer.name``), so
    every key can be grouped on. Every metric is plotted against ``env_steps``.

    W&B must never stop training, nor lose the run: an online start that fails or has not
    answered within ``init_timeout_s`` (an outage, a firewall that swallows packets) is torn down
    and the run logs offline in the same folder, syncable later; any other failure turns the sink
    into a no-op after one message. A ``status`` record (a failed run) goes to the run's summary
    and ends the run with exit code 1, so W&B lists it as failed.
    """

    def __init__(self, run_dir: Path, cfg: dict[str, Any], settings: Any, name: str, group: str | None,
                 tags: list[str], job_type: str) -> None:
        self.run: Any = None
        self.failed = False
        self.exit_code = 0
        self.mode = wandb_mode(settings.mode)
        self.run_dir = Path(run_dir)
        id_file = self.run_dir / WANDB_ID_FILE
        try:
            import wandb

            run_id = id_file.read_text().strip() if id_file.exists() else new_run_id()
            id_file.write_text(run_id)
            init = dict(project=settings.project, entity=settings.entity, group=group, name=name, tags=list(tags),
                        job_type=job_type, config=self.plain(cfg), id=run_id, resume="allow", dir=str(self.run_dir),
                        reinit="create_new")  # the members of a vectorised group: several runs per process
            try:
                self.run = wandb.init(mode=self.mode, settings=wandb.Settings(
                    silent=True, console="off", init_timeout=float(settings.init_timeout_s)), **init)
            except Exception as exc:
                if self.mode != "online":
                    raise
                reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                print(f"W&B online start failed within {settings.init_timeout_s:g} s ({reason}); logging offline "
                      "to the run folder instead", file=sys.stderr, flush=True)
                wandb.teardown()  # else the half-started online run keeps the id "in use" for the retry
                # A W&B service this process did not start (WANDB_SERVICE, inherited from a parent that
                # uses W&B) outlives the teardown and still holds the id: the retry starts its own.
                os.environ.pop("WANDB_SERVICE", None)
                self.mode = "offline"
                self.run = wandb.init(mode=self.mode, settings=wandb.Settings(silent=True, console="off"), **init)
            self.run.define_metric("env_steps")
            self.run.define_metric("*", step_metric="env_steps")
        except Exception as exc:  # W&B must never stop training
            self._fail("start", exc)

    @staticmethod
    def plain(value: Any) -> Any:
        """Enums as their values, containers recursively: what W&B stores in the run's config."""
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, dict):
            return {str(k): WandbSink.plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [WandbSink.plain(v) for v in value]
        return value

    @staticmethod
    def offline_run_dir(run: Any) -> str:
        """The ``wandb/offline-run-*`` folder of a run, which ``wandb sync`` uploads."""
        return str(Path(run.dir).parent) if str(run.dir).endswith("files") else str(run.dir)

    def _fail(self, what: str, exc: Exception) -> None:
        self.failed = True
        print(f"W&B {what} failed, continuing without it: {type(exc).__name__}: {exc}", file=sys.stderr)

    def write(self, record: dict[str, Any]) -> None:
        if self.failed:
            return
        try:
            if "status" in record:
                self.run.summary.update({"status": record["status"], "failure_reason": record.get("reason", "")})
                self.exit_code = 1
                return
            self.run.log(record)
        except Exception as exc:
            self._fail("logging", exc)

    def close(self) -> None:
        if self.run is None:
            return
        try:
            self.run.finish(exit_code=self.exit_code)
        except Exception as exc:
            print(f"W&B finish failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if self.mode == "offline":
            print(f"W&B run saved offline; upload with: wandb sync {self.offline_run_dir(self.run)}", file=sys.stderr)


class Logger:
    """Writes each record, stamped with the clocks and ``time``, to every sink.

    ``time`` is the run's wall time in seconds, summed over its attempts: a resumed run starts from
    the ``elapsed`` its checkpoint stored, so the last record says how long the run took in all
    (work lost after the last checkpoint is not counted; the work redone after resuming is).
    """

    def __init__(self, sinks: list[Sink], elapsed: float = 0.0) -> None:
        self.sinks = sinks
        self.start = time.time() - float(elapsed)

    def elapsed(self) -> float:
        return round(time.time() - self.start, 3)

    def log(self, clock: Clock, metrics: dict[str, float]) -> None:
        record = {**clock.as_dict(), "time": self.elapsed(), **metrics}
        for sink in self.sinks:
            sink.write(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
