"""What keeping freed memory (``marl.allocator``) saves: minor page faults of an update's pattern.

    python benchmarks/allocator.py              # 5 processes per setting
    python benchmarks/allocator.py --reps 9

Each process allocates several large tensors of different sizes (3-12 MiB) at once and frees them,
21 times, and counts its minor page faults over the last 20 (``getrusage``), with glibc's defaults
(``MARL_KEEP_FREED_MEMORY=0``) and with the tuning. The counts move with the machine's load and
where each heap settles (on this project's 2-core VM, one thread: 4,352-9,216 with the tuning,
21,721-25,338 without; 8,449 against 15,610 beside another CI job), so this is a measurement, not
a test; tests/test_allocator.py asserts the allocator settings themselves.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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
    env = {**os.environ, "MARL_KEEP_FREED_MEMORY": "1" if keep else "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", UPDATES], capture_output=True, text=True, env=env, timeout=300)
    if out.returncode != 0:
        sys.exit(out.stderr[-2000:])
    tuned, count = out.stdout.split()
    return tuned == "True", int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="processes per setting (interleaved)")
    args = parser.parse_args()
    counts: dict[bool, list[int]] = {True: [], False: []}
    for _ in range(args.reps):
        for keep in (True, False):
            tuned, n = faults(keep)
            counts[keep].append(n)
            if tuned != keep:
                print(f"note: MARL_KEEP_FREED_MEMORY={int(keep)} gave tuned={tuned} (not glibc?)")
    print("| malloc | minor page faults, 20 updates (median) | min | max | processes |")
    print("|---|---|---|---|---|")
    for keep, label in ((False, "glibc defaults"), (True, "marl.allocator")):
        c = counts[keep]
        print(f"| {label} | {statistics.median(c):,.0f} | {min(c):,} | {max(c):,} | {len(c)} |")
    ratio = statistics.median(counts[True]) / max(statistics.median(counts[False]), 1)
    print(f"\ntuned / default: {ratio:.2f}")


if __name__ == "__main__":
    main()
