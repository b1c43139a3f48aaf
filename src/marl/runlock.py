"""One writer per run folder (docs/architecture.md, invariant 9).

A relaunched sweep, or a requeued SLURM job whose predecessor is still exiting, would otherwise
resume from a checkpoint that a live process is still writing and truncate ``metrics.jsonl``
under it. The lock is ``flock`` on ``<run_dir>/run.lock``, taken before anything in the folder
is read or written. The kernel releases it when the holder's process ends, however it ends
(SIGKILL included), so a dead run never leaves a stale lock; the pid and host written into the
file serve only the message of the process that is refused. A run writes them (:meth:`RunLock.announce`)
only once its start is accepted, so that a refused start leaves ``run.lock`` as it was too.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from marl.errors import RunFolderError
from marl.run_folder import LOCK_FILE, pid_gone, read_json
SLURM_WAIT_S = 600.0  # a requeued job may start while the old one is still writing its checkpoint


def default_wait_s() -> float:
    """``faults.lock_wait_s=null``: fail at once locally; wait inside a SLURM job."""
    return SLURM_WAIT_S if os.environ.get("SLURM_JOB_ID") else 0.0


class RunLock:
    """Holds ``run_dir`` for this process until :meth:`release` (or the process ends)."""

    def __init__(self, run_dir: Path, wait_s: float | None = None, poll_s: float = 0.5,
                 announce: bool = True) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        wait = default_wait_s() if wait_s is None else float(wait_s)
        self.file = open(self.path, "a+", encoding="utf-8")
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self.holder()
                    self.file.close()
                    waited = f" after waiting {wait:g} s" if wait > 0 else ""
                    raise RunFolderError(
                        f"run folder {Path(run_dir)} is in use by another process ({holder}){waited}; two "
                        "writers would corrupt it. Let that run finish or stop it, or use another folder; "
                        "faults.lock_wait_s=SECONDS waits for it instead.") from None
                time.sleep(poll_s)
        if announce:
            self.announce()

    def announce(self) -> None:
        """Write this process into the lock file, for the message of a process that is refused."""
        self.file.seek(0)
        self.file.truncate()
        self.file.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                    "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}) + "\n")
        self.file.flush()

    def holder(self) -> str:
        """Who holds the lock, as the holder wrote it (a holder still deciding whether to start has
        not written itself yet: the file then names an earlier holder, whose process has ended)."""
        info = read_json(self.path) or {}
        try:
            who = f"pid {info['pid']} on host {info['host']}, since {info['since']}"
        except KeyError:
            return "holder unknown"
        if info["host"] == socket.gethostname() and pid_gone(info["pid"]):
            return f"a process that is starting; the last holder recorded, {who}, has ended"
        return who

    def release(self) -> None:
        if not self.file.closed:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_UN)
            self.file.close()
