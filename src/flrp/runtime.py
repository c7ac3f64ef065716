"""Process-level settings that make CPU training fast; applied once, by ``Algorithm.fit``.

glibc returns large freed blocks (≥ its mmap threshold, 128 KiB to 32 MiB adaptively) to the OS
and maps them again on the next step. Training allocates the same large activations every step
(e.g. a twin critic over 10 sampled actions x batch 512 x 256 units is a 21 MB tensor), so
each step paid ~20k page faults, 26 ms of system time in a 180 ms BCQ-Lag step (measured with
``benchmarks/bench_osrl.py``). Raising the mmap and trim thresholds keeps those blocks in the
heap. Set ``FLRP_NO_MALLOPT=1`` to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import os
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def tune_allocator(mmap_threshold: int = 64 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Keep blocks below ``mmap_threshold`` in glibc's heap; returns whether it was applied."""
    global _done
    if _done:
        return True
    if os.environ.get("FLRP_NO_MALLOPT") or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok
