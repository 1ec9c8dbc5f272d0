"""Turn a node's derived samples and job table into alerts that fire and clear.

``HealthEngine.observe`` is called once per sample (1 Hz) with the derived node and the jobs;
it returns what changed (``AlertChange``: an alert firing or clearing) and keeps the active set.
Two kinds of rule:

- conditions (idle GPU, throttling, pressure, a stalled job) fire after holding for ``for_s``
  and clear on the first sample where they no longer hold, or when their subject is gone;
- counters (ECC, Xid, OOM kills) fire when the counter grows and clear ``hold_s`` after its last
  growth. The first value seen is the baseline: errors from before agentd started are not news.

``NodeLiveness`` is the rule that needs an observer outside the node (a relay or the app): a
node not heard from for ``node_stale.for_s``.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import msgspec

from agentd.health.rules import CounterRule, HealthRules, Pressure, Rule
from agentd.metrics.samples import DerivedCgroup, DerivedGpu, DerivedNode
from agentd.protocol.alerts import Alert, AlertState, alert_data
from agentd.protocol.jobs import Event, JobInfo

# NVML clock-event reason bits (nvmlClocksEventReason*): the ones that mean the GPU is slowed
# by heat or hardware protection, and the software power cap (common under full load).
THROTTLE_HW_SLOWDOWN = 0x8
THROTTLE_SW_THERMAL = 0x20
THROTTLE_HW_THERMAL = 0x40
THROTTLE_HW_POWER_BRAKE = 0x80
THROTTLE_SW_POWER_CAP = 0x4
THROTTLE_SLOWDOWN_MASK = THROTTLE_HW_SLOWDOWN | THROTTLE_SW_THERMAL | THROTTLE_HW_THERMAL | THROTTLE_HW_POWER_BRAKE
_THROTTLE_NAMES = {
    THROTTLE_HW_SLOWDOWN: "hardware slowdown",
    THROTTLE_SW_THERMAL: "software thermal slowdown",
    THROTTLE_HW_THERMAL: "hardware thermal slowdown",
    THROTTLE_HW_POWER_BRAKE: "hardware power brake",
}

_HOLDING_GPUS = frozenset({"running", "paused", "checkpointing", "migrating"})
_STEP_HISTORY = 16


class AlertChange(NamedTuple):
    """An alert that began firing, or one that cleared (carrying the alert as it fired)."""

    alert: Alert
    state: AlertState


def throttle_names(reasons: int) -> str:
    """The slowdown reasons set in ``reasons``, readable (``"hardware thermal slowdown"``)."""
    return ", ".join(name for bit, name in _THROTTLE_NAMES.items() if reasons & bit) or "none"


@dataclass
class _Condition:
    since_s: float
    alert: Alert | None = None


@dataclass
class _Counter:
    value: float
    grew_s: float | None = None
    alert: Alert | None = None


@dataclass
class _StepTrack:
    step: float
    changed_s: float
    step_times: deque[float] = field(default_factory=lambda: deque(maxlen=_STEP_HISTORY))


class _Alerts:
    """The bookkeeping shared by the node engine and the liveness watcher."""

    def __init__(self) -> None:
        self._conditions: dict[tuple[str, str, str], _Condition] = {}
        self._counters: dict[tuple[str, str, str], _Counter] = {}
        self._seen: set[tuple[str, str, str]] = set()
        self.changes: list[AlertChange] = []

    def active(self) -> list[Alert]:
        """The alerts firing now, oldest first."""
        firing = [c.alert for c in self._conditions.values() if c.alert is not None]
        firing += [c.alert for c in self._counters.values() if c.alert is not None]
        return sorted(firing, key=lambda a: (a.since_s, a.key))

    def condition(self, rule: Rule, key: tuple[str, str, str], holds: bool, now_s: float,
                  make: Callable[[float], Alert]) -> None:
        """Track a condition; fire once it has held ``rule.for_s``, clear when it stops."""
        self._seen.add(key)
        cond = self._conditions.get(key)
        if not holds or not rule.enabled:
            if cond is not None:
                self._clear_condition(key)
            return
        if cond is None:
            cond = self._conditions[key] = _Condition(since_s=now_s)
        if cond.alert is None and now_s - cond.since_s >= rule.for_s:
            cond.alert = make(cond.since_s)
            self.changes.append(AlertChange(cond.alert, "firing"))

    def counter(self, rule: CounterRule, key: tuple[str, str, str], value: float | None, now_s: float,
                make: Callable[[float, float], Alert]) -> None:
        """Track an error counter; fire when it grows, clear ``hold_s`` after its last growth."""
        if value is None or not rule.enabled:
            return
        track = self._counters.get(key)
        if track is None:
            self._counters[key] = _Counter(value=value)
            return
        grown = value - track.value
        track.value = value
        if grown > 0:
            track.grew_s = now_s
            if track.alert is None:
                track.alert = make(now_s, grown)
                self.changes.append(AlertChange(track.alert, "firing"))
        elif track.alert is not None and track.grew_s is not None and now_s - track.grew_s >= rule.hold_s:
            self.changes.append(AlertChange(track.alert, "cleared"))
            track.alert = None

    def _clear_condition(self, key: tuple[str, str, str]) -> None:
        cond = self._conditions.pop(key)
        if cond.alert is not None:
            self.changes.append(AlertChange(cond.alert, "cleared"))

    def end_round(self) -> list[AlertChange]:
        """Clear conditions whose subject was not seen this round (a job ended, a GPU or a
        node gone); return this round's changes."""
        for key in [k for k in self._conditions if k not in self._seen]:
            self._clear_condition(key)
        self._seen.clear()
        changes, self.changes = self.changes, []
        return changes


class HealthEngine:
    """The health rules for one node, fed its derived samples and job table."""

    def __init__(self, node: str, rules: HealthRules | None = None) -> None:
        self.node = node
        self.rules = rules or HealthRules()
        self._alerts = _Alerts()
        self._steps: dict[str, _StepTrack] = {}

    def active(self) -> list[Alert]:
        """The alerts firing now."""
        return self._alerts.active()

    def observe(self, d: DerivedNode, jobs: Sequence[JobInfo], now_s: float) -> list[AlertChange]:
        """Evaluate every rule on one derived sample; the alerts that fired or cleared."""
        held: dict[int, str] = {}
        for job in jobs:
            if job.state in _HOLDING_GPUS:
                for index in job.gpus:
                    held[index] = job.id
        queued = sum(1 for j in jobs if j.state == "queued")
        for gpu in d.gpus:
            self._gpu(gpu, held.get(gpu.index), queued, now_s)
        states = {j.id: j.state for j in jobs}
        cgroups = {c.job_id: c for c in d.jobs}
        for job_id, cg in cgroups.items():
            self._job(cg, states.get(job_id, ""), now_s)
        for job_id in [j for j in self._steps if j not in cgroups]:
            del self._steps[job_id]
        self._pressure(d, now_s)
        return self._alerts.end_round()

    def _alert(self, rule: str, subject: str, severity: str, message: str, since_s: float,
               evidence: dict[str, float | str]) -> Alert:
        return Alert(rule=rule, node=self.node, subject=subject, severity=severity,  # type: ignore[arg-type]
                     message=message, since_s=since_s, evidence=evidence)

    def _gpu(self, g: DerivedGpu, job_id: str | None, queued: int, now_s: float) -> None:
        r, subject, a = self.rules, f"gpu {g.index}", self._alerts
        util = g.sm_util_pct
        idle_alloc = job_id is not None and util is not None and util < r.gpu_idle_allocated.util_below_pct
        a.condition(r.gpu_idle_allocated, ("gpu_idle_allocated", self.node, subject), idle_alloc, now_s,
                    lambda since: self._alert(
                        "gpu_idle_allocated", subject, r.gpu_idle_allocated.severity,
                        f"GPU {g.index} on {self.node} is held by job {job_id} but idle "
                        f"({util:.0f}% SM) for {r.gpu_idle_allocated.for_s / 60:.0f} min",
                        since, {"job_id": job_id or "", "sm_util_pct": util or 0.0}))
        idle_free = (job_id is None and queued > 0 and util is not None
                     and util < r.gpu_idle_while_queued.util_below_pct)
        a.condition(r.gpu_idle_while_queued, ("gpu_idle_while_queued", self.node, subject), idle_free, now_s,
                    lambda since: self._alert(
                        "gpu_idle_while_queued", subject, r.gpu_idle_while_queued.severity,
                        f"GPU {g.index} on {self.node} is free and idle while {queued} job(s) queue",
                        since, {"queued": float(queued), "sm_util_pct": util or 0.0}))
        slow = g.throttle_reasons & THROTTLE_SLOWDOWN_MASK
        a.condition(r.gpu_throttle, ("gpu_throttle", self.node, subject), bool(slow), now_s,
                    lambda since: self._alert(
                        "gpu_throttle", subject, r.gpu_throttle.severity,
                        f"GPU {g.index} on {self.node} is slowed: {throttle_names(slow)}"
                        + (f" (SM clock {g.sm_clock_mhz} MHz, {g.temp_c:.0f} °C)"
                           if g.sm_clock_mhz is not None and g.temp_c is not None else ""),
                        since, _gpu_evidence(g)))
        capped = bool(g.throttle_reasons & THROTTLE_SW_POWER_CAP)
        a.condition(r.gpu_power_cap, ("gpu_power_cap", self.node, subject), capped, now_s,
                    lambda since: self._alert(
                        "gpu_power_cap", subject, r.gpu_power_cap.severity,
                        f"GPU {g.index} on {self.node} has been held at its power cap for "
                        f"{r.gpu_power_cap.for_s / 60:.0f} min", since, _gpu_evidence(g)))
        a.counter(r.gpu_ecc, ("gpu_ecc", self.node, subject), g.ecc_uncorrected_total, now_s,
                  lambda since, grown: self._alert(
                      "gpu_ecc", subject, r.gpu_ecc.severity,
                      f"GPU {g.index} on {self.node}: {grown:.0f} new uncorrectable ECC error(s)",
                      since, {"ecc_uncorrected_total": float(g.ecc_uncorrected_total or 0)}))
        a.counter(r.gpu_xid, ("gpu_xid", self.node, subject), g.xid_total, now_s,
                  lambda since, grown: self._alert(
                      "gpu_xid", subject, r.gpu_xid.severity,
                      f"GPU {g.index} on {self.node}: {grown:.0f} new Xid error(s) (see the kernel log)",
                      since, {"xid_total": float(g.xid_total or 0)}))

    def _job(self, cg: DerivedCgroup, state: str, now_s: float) -> None:
        r, subject, a = self.rules, f"job {cg.job_id}", self._alerts
        a.counter(r.oom_kill, ("oom_kill", self.node, subject), cg.oom_kills_total, now_s,
                  lambda since, grown: self._alert(
                      "oom_kill", subject, r.oom_kill.severity,
                      f"job {cg.job_id} on {self.node}: {grown:.0f} process(es) killed for memory "
                      f"(peak {cg.mem_peak_bytes / 2**20:.0f} MiB)",
                      since, {"oom_kills_total": float(cg.oom_kills_total),
                              "mem_peak_bytes": float(cg.mem_peak_bytes)}))
        step = cg.app.get("step", cg.app.get("step_total"))
        stalled, evidence = False, dict[str, float]()
        if step is not None:
            stalled, evidence = self._stalled(cg.job_id, step, state == "running" and not cg.frozen, now_s)
        limit = evidence.get("limit_s", 0.0)
        a.condition(r.job_stalled, ("job_stalled", self.node, subject), stalled, now_s,
                    lambda since: self._alert(
                        "job_stalled", subject, r.job_stalled.severity,
                        f"job {cg.job_id} on {self.node} made no step progress for {limit:.0f} s "
                        f"(usually {evidence.get('usual_step_s', 0.0):.1f} s per step)",
                        since, dict(evidence)))

    def _stalled(self, job_id: str, step: float, running: bool, now_s: float) -> tuple[bool, dict[str, float]]:
        """Whether the job's step has not moved for factor × its usual step time."""
        rule = self.rules.job_stalled
        track = self._steps.get(job_id)
        if track is None:
            self._steps[job_id] = _StepTrack(step=step, changed_s=now_s)
            return False, {}
        if step != track.step:
            advanced = step - track.step
            if advanced > 0:
                track.step_times.append((now_s - track.changed_s) / advanced)
            track.step, track.changed_s = step, now_s
            return False, {}
        if not running:
            track.changed_s = now_s  # time paused or queued is not a stall
            return False, {}
        if len(track.step_times) < rule.min_steps:
            return False, {}
        usual = statistics.median(track.step_times)
        limit = max(rule.min_s, rule.factor * usual)
        quiet = now_s - track.changed_s
        return quiet >= limit, {"step": step, "usual_step_s": usual, "quiet_s": quiet, "limit_s": limit}

    def _pressure(self, d: DerivedNode, now_s: float) -> None:
        r = self.rules
        self._pressure_rule("mem_pressure", r.mem_pressure, "memory", d.mem_pressure_pct, now_s)
        self._pressure_rule("io_pressure", r.io_pressure, "IO", d.io_pressure_pct, now_s)

    def _pressure_rule(self, name: str, rule: Pressure, what: str, pct: float, now_s: float) -> None:
        def make(since: float) -> Alert:
            return self._alert(name, "node", rule.severity,
                               f"{self.node}: tasks stalled on {what} {pct:.0f}% of the time "
                               f"(above {rule.above_pct:.0f}%)", since, {"pressure_pct": pct})

        self._alerts.condition(rule, (name, self.node, "node"), pct > rule.above_pct, now_s, make)


def _gpu_evidence(g: DerivedGpu) -> dict[str, float | str]:
    ev: dict[str, float | str] = {"throttle_reasons": float(g.throttle_reasons),
                                  "reasons": throttle_names(g.throttle_reasons)}
    for name in ("sm_clock_mhz", "temp_c", "power_w", "power_limit_w", "sm_util_pct"):
        value = getattr(g, name)
        if value is not None:
            ev[name] = float(value)
    return ev


class NodeLiveness:
    """``node_stale`` for an observer of many nodes (relay, app): fires for a node not heard
    from for ``for_s`` and clears when it is heard again or no longer followed."""

    def __init__(self, rules: HealthRules | None = None, observer: str = "") -> None:
        self.rules = rules or HealthRules()
        self.observer = observer
        self._alerts = _Alerts()

    def active(self) -> list[Alert]:
        """The stale-node alerts firing now."""
        return self._alerts.active()

    def observe(self, last_heard_s: dict[str, float], now_s: float) -> list[AlertChange]:
        """``last_heard_s``: every followed node and when it was last heard (wall seconds)."""
        rule = self.rules.node_stale
        at_once = msgspec.structs.replace(rule, for_s=0.0)  # the silence itself is the duration
        for node, heard in last_heard_s.items():
            silent = now_s - heard
            self._alerts.condition(at_once, ("node_stale", node, "node"), silent >= rule.for_s, now_s,
                                   self._stale_alert(node, heard, silent))
        return self._alerts.end_round()

    def _stale_alert(self, node: str, heard: float, silent: float) -> Callable[[float], Alert]:
        def make(_noticed: float) -> Alert:
            # since = when the node was last heard, not when the silence was noticed
            return Alert(rule="node_stale", node=node, subject="node", severity=self.rules.node_stale.severity,
                         message=f"{node} not heard from for {silent:.0f} s"
                                 + (f" (seen from {self.observer})" if self.observer else ""),
                         since_s=heard, evidence={"silent_s": silent})
        return make


def alert_event(change: AlertChange, wall_s: float) -> Event:
    """The ``"alert"`` event announcing ``change`` (daemon and relay publish the same shape)."""
    alert = change.alert
    verb = "firing" if change.state == "firing" else "cleared"
    return Event(wall_s=wall_s, node=alert.node, kind="alert", message=f"{alert.severity} {verb}: {alert.message}",
                 job_id=alert.subject[4:] if alert.subject.startswith("job ") else "",
                 ok=change.state == "cleared" or alert.severity == "info", data=alert_data(alert, change.state))


def alerts_by_severity(alerts: Iterable[Alert]) -> dict[str, int]:
    """How many alerts of each severity (for status-bar counts)."""
    counts = {"critical": 0, "warning": 0, "info": 0}
    for alert in alerts:
        counts[alert.severity] = counts.get(alert.severity, 0) + 1
    return counts
