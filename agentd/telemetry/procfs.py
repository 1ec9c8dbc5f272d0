"""Cheap reads of small kernel files (/proc, /sys, cgroupfs).

``os.open``/``os.read`` skip the buffered and text layers of ``open()``; for files the kernel
generates on each read that layering is a third of the cost, and the collector reads dozens
of them each tick (hundreds in a process scan).
"""

from __future__ import annotations

import os

#: Large enough for every file we read in one call (per-cgroup files, /proc/PID/stat,
#: /proc/stat on hosts with a few hundred cores); bigger ones are read in a loop.
READ_CHUNK = 65536

__all__ = ["read_bytes", "read_text"]


def read_bytes(path: str) -> bytes | None:
    """The whole file, or None when it does not exist or cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while True:
            chunk = os.read(fd, READ_CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_text(path: str) -> str | None:
    """The whole file as text (ASCII, invalid bytes replaced), or None when unreadable."""
    data = read_bytes(path)
    return None if data is None else data.decode("ascii", errors="replace")
