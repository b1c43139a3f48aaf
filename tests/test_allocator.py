"""``marl.allocator``: freed tensor memory stays in the process, so an update's large tensors do not
page-fault in again every step (measured in page faults, not time: the count is what it saves)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# An update's pattern: several large tensors of different sizes alive at once, then all freed.
UPDATES = """
import resource, sys, torch
from marl.allocator import keep_freed_memory
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
    tuned, kept = faults(keep=True)
    untuned, default = faults(keep=False)
    assert tuned and not untuned  # MARL_KEEP_FREED_MEMORY=0 leaves glibc's defaults
    assert kept < default / 2, f"{kept} page faults with the tuning, {default} without"
