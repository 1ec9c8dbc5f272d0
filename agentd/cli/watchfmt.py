"""The JSON line format of ``agentctl watch --json`` (and ``agentctl replay --json``)."""

from __future__ import annotations

from typing import Any

import msgspec

from agentd.metrics import DerivedNode


def derived_to_json(derived: DerivedNode) -> dict[str, Any]:
    """One node at one tick: ``node``, ``ts`` (wall clock, seconds) and every derived value."""
    out = msgspec.to_builtins(derived)
    out["ts"] = derived.wall_s
    return out
