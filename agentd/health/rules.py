"""Health rule settings: defaults that make sense, overridable in a TOML rules file.

A rules file names only what it changes; every rule keeps its other defaults::

    [gpu_idle_allocated]
    for_s = 900            # 15 minutes instead of 10
    util_below_pct = 3

    [mem_pressure]
    enabled = false

Unknown rules or keys, wrong types and negative durations are refused with a message that names
the file, the rule, the key and what is accepted, so a typo never silently disables a check.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

Severity = Literal["info", "warning", "critical"]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=30 * 86400)]
Percent = Annotated[float, msgspec.Meta(ge=0, le=100)]


class Rule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What every rule has: on/off, how long the condition must hold, and its severity."""

    enabled: bool = True
    for_s: Seconds = 0.0
    severity: Severity = "warning"


class GpuIdleAllocated(Rule, kw_only=True, forbid_unknown_fields=True):
    """A GPU given to a running job stays below ``util_below_pct`` SM utilisation."""

    for_s: Seconds = 600.0
    util_below_pct: Percent = 5.0


class GpuIdleWhileQueued(Rule, kw_only=True, forbid_unknown_fields=True):
    """A GPU nobody holds is idle while jobs wait in this node's queue."""

    for_s: Seconds = 300.0
    severity: Severity = "info"
    util_below_pct: Percent = 5.0


class GpuThrottle(Rule, kw_only=True, forbid_unknown_fields=True):
    """Clocks held down by heat, a hardware slowdown or a power brake (NVML clock-event bits)."""

    for_s: Seconds = 60.0


class GpuPowerCap(Rule, kw_only=True, forbid_unknown_fields=True):
    """Clocks held down by the software power cap for a long time: normal at full load for a
    while, a sign of a bad power limit or cooling when it lasts."""

    for_s: Seconds = 1800.0
    severity: Severity = "info"


class CounterRule(Rule, kw_only=True, forbid_unknown_fields=True):
    """Fires when an error counter grows; clears ``hold_s`` after its last growth."""

    severity: Severity = "critical"
    hold_s: Seconds = 900.0


class OomKill(CounterRule, kw_only=True, forbid_unknown_fields=True):
    severity: Severity = "warning"
    hold_s: Seconds = 600.0


class JobStalled(Rule, kw_only=True, forbid_unknown_fields=True):
    """A running job's reported ``step`` has not moved for ``factor`` × its usual step time
    (at least ``min_s``); judged only after ``min_steps`` steps were seen."""

    factor: Annotated[float, msgspec.Meta(ge=1, le=1000)] = 5.0
    min_s: Seconds = 60.0
    min_steps: Annotated[int, msgspec.Meta(ge=2, le=10_000)] = 3


class Pressure(Rule, kw_only=True, forbid_unknown_fields=True):
    """Pressure stall information above ``above_pct`` (share of time some task waited)."""

    for_s: Seconds = 60.0
    above_pct: Percent = 20.0


class NodeStale(Rule, kw_only=True, forbid_unknown_fields=True):
    """A followed node not heard from (no sample, no heartbeat) for ``for_s``."""

    for_s: Seconds = 5.0
    severity: Severity = "critical"


class HealthRules(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Every rule's settings. Field names are the rule names used in alerts and rules files."""

    gpu_idle_allocated: GpuIdleAllocated = msgspec.field(default_factory=GpuIdleAllocated)
    gpu_idle_while_queued: GpuIdleWhileQueued = msgspec.field(default_factory=GpuIdleWhileQueued)
    gpu_throttle: GpuThrottle = msgspec.field(default_factory=GpuThrottle)
    gpu_power_cap: GpuPowerCap = msgspec.field(default_factory=GpuPowerCap)
    gpu_ecc: CounterRule = msgspec.field(default_factory=CounterRule)
    gpu_xid: CounterRule = msgspec.field(default_factory=CounterRule)
    oom_kill: OomKill = msgspec.field(default_factory=OomKill)
    job_stalled: JobStalled = msgspec.field(default_factory=JobStalled)
    mem_pressure: Pressure = msgspec.field(default_factory=Pressure)
    io_pressure: Pressure = msgspec.field(default_factory=lambda: Pressure(above_pct=40.0))
    node_stale: NodeStale = msgspec.field(default_factory=NodeStale)


RULE_NAMES: tuple[str, ...] = HealthRules.__struct_fields__


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file, rule and key."""


def rules_from_dict(data: dict[str, Any], source: str = "rules") -> HealthRules:
    """Defaults overlaid with ``data`` (the parsed TOML); raises RulesError naming the problem."""
    for name, section in data.items():
        if name not in RULE_NAMES:
            raise RulesError(f"{source}: unknown rule [{name}]; rules are: {', '.join(RULE_NAMES)}")
        if not isinstance(section, dict):
            raise RulesError(f"{source}: [{name}] must be a table of settings, not {type(section).__name__}")
        for key, value in section.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise RulesError(f"{source}: [{name}] {key} = {value} is not a finite number")
    try:
        return msgspec.convert(data, HealthRules)
    except msgspec.ValidationError as exc:
        # msgspec says e.g. "Expected `float` >= 0 - at `$.gpu_throttle.for_s`"
        where = str(exc).rsplit(" - at `$.", 1)
        if len(where) == 2:
            rule, _, key = where[1].rstrip("`").partition(".")
            raise RulesError(f"{source}: [{rule}] {key or '(table)'}: {where[0]}") from None
        raise RulesError(f"{source}: {exc}") from None


def load_rules(path: str | Path | None) -> HealthRules:
    """The rules in ``path`` over the defaults; the defaults alone when ``path`` is None."""
    if path is None:
        return HealthRules()
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise RulesError(f"health rules file {p} does not exist; create it or drop the setting") from None
    except OSError as exc:
        raise RulesError(f"health rules file {p} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"health rules file {p} is not valid TOML: {exc}") from None
    return rules_from_dict(data, source=str(p))
