"""Pressure stall information: the format shared by /proc/pressure/* and a cgroup's *.pressure."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["PRESSURE_RESOURCES", "PressureValues", "parse_pressure"]

#: The resources the kernel reports pressure for.
PRESSURE_RESOURCES = ("cpu", "memory", "io")


class PressureValues(NamedTuple):
    """One PSI file: cumulative stall times (microseconds) and the kernel's 10 s averages (%).

    ``full`` is absent for the CPU on older kernels and stays 0 then.
    """

    some_total_us: int = 0
    full_total_us: int = 0
    some_avg10_pct: float = 0.0
    full_avg10_pct: float = 0.0


def parse_pressure(text: str) -> PressureValues:
    """Parse ``some avg10=.. avg60=.. avg300=.. total=..`` / ``full ...`` lines; unknown or
    malformed values are skipped."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] not in ("some", "full"):
            continue
        for kv in parts[1:]:
            key, _, val = kv.partition("=")
            if key in ("avg10", "total"):
                try:
                    values[f"{parts[0]}_{key}"] = float(val)
                except ValueError:
                    pass
    return PressureValues(
        some_total_us=int(values.get("some_total", 0)),
        full_total_us=int(values.get("full_total", 0)),
        some_avg10_pct=values.get("some_avg10", 0.0),
        full_avg10_pct=values.get("full_avg10", 0.0),
    )
