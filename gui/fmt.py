"""Numbers as a person reads them: 1.2 GiB, 340 MB/s, 3 m 12 s. Pure functions, no Qt."""

from __future__ import annotations

import math

from agentd.metrics.units import DASH, human_bytes


def rate(n: float | None, unit: str = "B/s") -> str:
    if n is None or math.isnan(n):
        return DASH
    if unit == "B/s":
        return human_bytes(n) + "/s"
    return f"{si(n)} {unit}".strip()


def si(n: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.1f}{suffix}"
    return f"{n:.1f}" if abs(n) < 100 else f"{n:.0f}"


def pct(n: float | None) -> str:
    return DASH if n is None or math.isnan(n) else f"{n:.0f}%"


def duration(s: float | None) -> str:
    if s is None or s < 0:
        return DASH
    s = int(s)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} m {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} m"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def value(v: float | None, unit: str) -> str:
    """A chart read-out in its unit ("%", "B", "B/s", "W", "°C", "/s" or "")."""
    if v is None or math.isnan(v):
        return DASH
    if unit == "%":
        return f"{v:.1f}%"
    if unit == "B":
        return human_bytes(v)
    if unit == "B/s":
        return rate(v)
    if unit in ("W", "°C"):
        return f"{v:.0f} {unit}"
    return si(v) + (f" {unit}" if unit else "")
