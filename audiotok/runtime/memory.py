"""How much memory this process can still take, for refusing work that can't fit before it
starts (a clear error instead of the kernel's out-of-memory kill).

Two bounds, the smaller wins: the machine's (Linux's ``MemAvailable``) and, in a container or
a systemd slice, the process's control group's limit less its working set. Inside Docker or
Kubernetes ``/proc/meminfo`` shows the host's memory, so without the second a pod of 4 GiB on
a host of 256 GiB would be told it has 250.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_memory() -> int | None:
    """Bytes that can be allocated before swapping or the group's limit; None if unknown."""
    bounds = [b for b in (_machine_available(), cgroup_room(_own_cgroup())) if b is not None]
    return min(bounds) if bounds else None


def _machine_available() -> int | None:
    """``MemAvailable`` (free memory plus the page cache the kernel can drop), else free
    physical memory."""
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


def _own_cgroup() -> Path | None:
    """This process's cgroup v2 folder (``0::/path`` in ``/proc/self/cgroup``), or v1's memory
    controller folder."""
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    for line in lines:
        number, controllers, path = [*line.split(":", 2), "", ""][:3]
        if "memory" in controllers.split(","):
            root = CGROUP_ROOT / "memory"
        elif number == "0" and controllers == "":
            root = CGROUP_ROOT
        else:
            continue
        # A container without its own cgroup namespace sees the host's path for its group,
        # and its own group mounted at the controller's root.
        folder = root / path.lstrip("/")
        return folder if folder.is_dir() else root
    return None


def cgroup_room(folder: Path | None) -> int | None:
    """What ``folder``'s memory limit leaves: the limit less the working set (usage less the
    inactive page cache, which the kernel reclaims first, as the kubelet counts it). None
    without a limit (``max``, or v1's huge number) or files to read.

    In a container with its own cgroup namespace the group is the root of its view, and the
    folder named by ``/proc/self/cgroup`` (``/``) is the one to read, as here.
    """
    if folder is None:
        return None
    v2 = folder / "memory.max"
    limit_file, usage_file = (
        (v2, folder / "memory.current")
        if v2.exists()
        else (folder / "memory.limit_in_bytes", folder / "memory.usage_in_bytes")
    )
    try:
        text = limit_file.read_text(encoding="ascii").strip()
        if text == "max" or int(text) >= 1 << 60:  # v1 says "no limit" with a page-rounded 2^63
            return None
        limit, usage = int(text), int(usage_file.read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None
    inactive = 0
    try:
        for line in (folder / "memory.stat").read_text(encoding="ascii").splitlines():
            key, _, value = line.partition(" ")
            if key in ("inactive_file", "total_inactive_file"):
                inactive = int(value)
                break
    except (OSError, ValueError):
        pass
    return max(0, limit - max(0, usage - inactive))
