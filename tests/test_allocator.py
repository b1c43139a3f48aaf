"""``marl.allocator``: freed tensor memory stays in the process, so an update's large tensors do not
page-fault in again every step.

What the code controls is where glibc's malloc serves a large block and whether it keeps the block
once freed; that is asserted here, in a fresh process per setting, through glibc's own accounting
(``mallinfo2``), which no other process on the machine can move. What the tuning saves (page
faults, time) depends on the machine and its load and is measured by ``benchmarks/allocator.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# One 16 MiB block (an update's activation, well above glibc's default mmap threshold of 128 KiB),
# allocated and freed through libc itself; glibc's counters before, while held and after.
PROBE = """
import ctypes, ctypes.util
from marl.allocator import keep_freed_memory
tuned = keep_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                 "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
before = libc.mallinfo2()
block = libc.malloc(16 << 20)
held = libc.mallinfo2()
libc.free(block)
after = libc.mallinfo2()
print(tuned, held.hblkhd - before.hblkhd, after.fordblks)
"""
BLOCK = 16 << 20


def probe(keep: bool) -> tuple[bool, int, int]:
    """(tuned, bytes mmapped for the block while held, free bytes kept in the heap after it is freed)."""
    env = {**os.environ, "MARL_KEEP_FREED_MEMORY": "1" if keep else "0"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    tuned, mmapped, kept = out.stdout.split()
    return tuned == "True", int(mmapped), int(kept)


def has_mallinfo2() -> bool:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return name is not None and hasattr(ctypes.CDLL(name), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux") or not has_mallinfo2(),
                    reason="glibc's malloc (2.33 or later, for mallinfo2) is tuned on Linux only")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    tuned, mmapped, kept = probe(keep=True)
    assert tuned
    assert mmapped == 0, f"with the tuning a {BLOCK} B block was still mmapped ({mmapped} B): faulted in on each use"
    assert kept >= BLOCK, f"with the tuning only {kept} B stayed in the heap after the free: trimmed, not kept"
    # MARL_KEEP_FREED_MEMORY=0 leaves glibc's defaults: the same block is mmapped and handed back.
    tuned, mmapped, kept = probe(keep=False)
    assert not tuned
    assert mmapped >= BLOCK and kept < BLOCK, (mmapped, kept)
