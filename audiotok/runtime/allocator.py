"""Process settings that make CPU inference fast without changing any result.

glibc serves allocations above its mmap threshold (at most 32 MiB) straight from the kernel
and gives them back on free, so every large activation tensor of a long signal costs fresh
page faults: on a minute of audio, about as much system time as compute. Raising the mmap and
trim thresholds keeps freed memory in the heap for the next layer: the same arithmetic on the
same bytes, about twice as fast (benchmarks/RESULTS.md). The price is that the process keeps
its peak memory until it exits, which suits a command-line run or a dedicated worker; set
``AUDIOTOK_KEEP_MALLOC=1`` to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_tuned = False


def tune_allocator() -> bool:
    """Raises glibc's mmap and trim thresholds, once per process; True if it did so."""
    global _tuned
    if _tuned or os.environ.get("AUDIOTOK_KEEP_MALLOC") or not sys.platform.startswith("linux"):
        return False
    try:
        # The process's own symbols, which hold the C library's: no search for libc's file
        # (ctypes.util.find_library runs ldconfig in a subprocess, a few ms at every start).
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 31))
    return _tuned
