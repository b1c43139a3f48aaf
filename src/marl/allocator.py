"""Keep the memory that tensors free inside the process, instead of handing it back to the OS.

Why: every learner update allocates and frees the same large tensors (activations and
gradients of megabytes, more with ``seeds_per_process``). glibc's malloc serves blocks above
``M_MMAP_THRESHOLD`` with a fresh ``mmap`` and gives them back with ``munmap``, and trims the top
of its heap above ``M_TRIM_THRESHOLD``, so each update faults those pages in again, one 4 KiB
page at a time. On virtual machines a page fault is expensive: on this project's 2-core VM, a
vectorised LBF group of 8 members took 1.2M minor page faults in one 28 s benchmark process with
glibc's defaults and 0.22M with the settings below (docs/performance.md has the update times).

Raising both thresholds (the mmap one to glibc's maximum, 32 MiB) keeps freed blocks for the next
update. The cost: a process keeps up to its peak heap after tensors are freed, which the next
update reuses anyway. Only glibc (Linux) is tuned; elsewhere this does nothing. Set
``MARL_KEEP_FREED_MEMORY=0`` to keep glibc's defaults (e.g. to compare, as benchmarks do).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**30


@functools.cache
def keep_freed_memory() -> bool:
    """Tune glibc's malloc once per process; True if it was tuned."""
    if os.environ.get("MARL_KEEP_FREED_MEMORY", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): leave the allocator alone
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
