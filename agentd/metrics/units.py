"""Quantities as a person reads them, shared by agentctl and the app: ``1.5 GiB``."""

from __future__ import annotations

import math

DASH = "—"  # no value (unknown, not measured, NaN)
_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(n: float | None) -> str:
    """``n`` bytes in binary units: ``512 B``, ``1.5 GiB``; a dash for None, NaN or infinity."""
    if n is None or not math.isfinite(n):
        return DASH
    value = float(n)
    for unit in _BYTE_UNITS:
        if abs(value) < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return DASH  # not reached: the last unit always returns
