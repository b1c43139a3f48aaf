"""``marl.allocator``: freed tensor memory stays in the process, so an update's large tensors do not
page-fault in again every step (measured in page faults, not time: the count is what it saves)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys

import pytest

# An update's pattern: several large tensors of different sizes alive at once, then all freed.
UPDATES = """
import resource, sys, torch
from marl.allocator import keep_freed_memory
torch.set_num_threads(1)  # as a run has it (threads: 1); a second thread's arena adds its own faults
print(keep_freed_memory())
def step():
    xs = [torch.empty(int(n * 2**18)).fill_(1.0) for n in (3, 5, 6, 7, 9, 12)]  # 3-12 MiB each
    del xs
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(keep: bool) -> tuple[bool, int]:
    env = {**os.environ, "MARL_KEEP_FREED_MEMORY": "1" if keep else "0"}
    out = subprocess.run([sys.executable, "-c", UPDATES], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    tuned, count = out.stdout.split()
    return tuned == "True", int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is tuned on Linux only")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    # Medians of three processes each: one process's count varies with where the heap settles in
    # its first steps (seen on this project's VM, one thread: 4,352-9,216 with the tuning,
    # 21,721-25,338 without).
    tuned_runs = [faults(keep=True) for _ in range(3)]
    untuned_runs = [faults(keep=False) for _ in range(3)]
    assert all(t for t, _ in tuned_runs) and not any(t for t, _ in untuned_runs)  # =0 leaves glibc's defaults
    kept = statistics.median(n for _, n in tuned_runs)
    default = statistics.median(n for _, n in untuned_runs)
    assert kept < default / 2, f"{kept} page faults with the tuning, {default} without (medians of 3)"
