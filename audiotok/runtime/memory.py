"""How much memory this machine can still give, for refusing work that can't fit before it
starts (a clear error instead of the kernel's out-of-memory kill)."""

from __future__ import annotations

import os


def available_memory() -> int | None:
    """Bytes that can be allocated without swapping (Linux's ``MemAvailable``: free memory plus
    the page cache it can drop), else free physical memory; None where neither is known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
