"""Cheap reads of small kernel files, and the two flat formats most of them use.

``os.open``/``os.read`` skip the buffered and text layers of ``open()``; for files the kernel
generates on each read that layering is a third of the cost, and the collector reads dozens
of them each tick (hundreds in a process scan).
"""

from __future__ import annotations

import os
from typing import TypeAlias

#: A path as every reader here accepts it.
StrPath: TypeAlias = "str | os.PathLike[str]"

#: Large enough for every file we read in one call (per-cgroup files, /proc/PID/stat,
#: /proc/stat on hosts with a few hundred cores); bigger ones are read in a loop.
READ_CHUNK = 65536

__all__ = ["READ_CHUNK", "StrPath", "parse_keyed", "read_bytes", "read_int", "read_keyed", "read_text"]


def read_bytes(path: StrPath) -> bytes | None:
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


def read_text(path: StrPath) -> str | None:
    """The whole file as text (ASCII, invalid bytes replaced), or None when unreadable."""
    data = read_bytes(path)
    return None if data is None else data.decode("ascii", errors="replace")


def read_int(path: StrPath) -> int | None:
    """The first number of a one-value file (``memory.current``); None when missing, ``max``
    (no limit) or not a number."""
    text = read_text(path)
    if text is None:
        return None
    first = text.split(maxsplit=1)
    try:
        return int(first[0]) if first else None
    except ValueError:
        return None


def parse_keyed(text: str) -> dict[str, int]:
    """A flat keyed file (``key value`` per line, as cpu.stat or memory.events); lines that
    are not exactly a key and an integer are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) == 2:
            try:
                out[f[0]] = int(f[1])
            except ValueError:
                pass
    return out


def read_keyed(path: StrPath) -> dict[str, int]:
    """:func:`parse_keyed` of a file; empty when it is missing."""
    return parse_keyed(read_text(path) or "")
