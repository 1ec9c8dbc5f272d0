"""The health engine on sequences of derived samples: conditions fire after holding and clear,
counters fire on growth and clear after their hold, subjects that vanish clear their alerts."""

from __future__ import annotations

from agentd.health.engine import (
    THROTTLE_HW_THERMAL,
    THROTTLE_SW_POWER_CAP,
    HealthEngine,
    NodeLiveness,
    alerts_by_severity,
)
from agentd.health.rules import HealthRules, rules_from_dict
from agentd.metrics.samples import DerivedCgroup, DerivedGpu, DerivedNode
from agentd.protocol.alerts import alert_data, alert_from_data
from agentd.protocol.jobs import JobInfo, JobSpec


def node(gpus: list[DerivedGpu] = (), jobs: list[DerivedCgroup] = (), **kw: float) -> DerivedNode:  # type: ignore[assignment]
    return DerivedNode(node="n1", wall_s=0.0, interval_s=1.0, cpu_pct=0.0, gpus=list(gpus), jobs=list(jobs), **kw)


def job(job_id: str, state: str = "running", gpus: list[int] = ()) -> JobInfo:  # type: ignore[assignment]
    return JobInfo(id=job_id, node="n1", name=job_id, state=state, spec=JobSpec(argv=["x"]), gpus=list(gpus))  # type: ignore[arg-type]


def run(engine: HealthEngine, seconds: range, make_node, jobs=()) -> list[tuple[int, str, str, str]]:
    out = []
    for t in seconds:
        for change in engine.observe(make_node(t), list(jobs), float(t)):
            out.append((t, change.state, change.alert.rule, change.alert.subject))
    return out


def test_idle_allocated_gpu_fires_after_its_duration_and_clears_when_busy() -> None:
    engine = HealthEngine("n1", rules_from_dict({"gpu_idle_allocated": {"for_s": 120}}))

    def sample(t: int) -> DerivedNode:
        util = 0.0 if t < 200 else 90.0
        return node([DerivedGpu(index=0, sm_util_pct=util), DerivedGpu(index=1, sm_util_pct=0.0)])

    changes = run(engine, range(260), sample, [job("n1.1", gpus=[0])])
    # GPU 1 is idle too, but nobody holds it and nothing queues: no alert for it.
    assert changes == [(120, "firing", "gpu_idle_allocated", "gpu 0"), (200, "cleared", "gpu_idle_allocated", "gpu 0")]


def test_idle_free_gpu_alerts_only_while_jobs_queue() -> None:
    engine = HealthEngine("n1", rules_from_dict({"gpu_idle_while_queued": {"for_s": 10}}))
    sample = lambda t: node([DerivedGpu(index=0, sm_util_pct=0.0)])  # noqa: E731
    assert run(engine, range(30), sample, [job("n1.1", state="succeeded")]) == []
    changes = run(engine, range(30, 60), sample, [job("n1.2", state="queued")])
    assert changes == [(40, "firing", "gpu_idle_while_queued", "gpu 0")]
    assert engine.active()[0].evidence["queued"] == 1.0


def test_thermal_throttle_names_the_reason_and_power_cap_is_a_separate_slow_rule() -> None:
    engine = HealthEngine("n1")

    def sample(t: int) -> DerivedNode:
        return node([DerivedGpu(index=3, sm_util_pct=99.0, throttle_reasons=THROTTLE_HW_THERMAL, sm_clock_mhz=900,
                                temp_c=91.0),
                     DerivedGpu(index=4, sm_util_pct=99.0, throttle_reasons=THROTTLE_SW_POWER_CAP)])

    changes = run(engine, range(120), sample)
    assert changes == [(60, "firing", "gpu_throttle", "gpu 3")]  # power cap needs 30 min by default
    alert = engine.active()[0]
    assert "hardware thermal slowdown" in alert.message and "900 MHz" in alert.message
    assert alert.evidence["temp_c"] == 91.0
    assert run(engine, range(120, 1900), sample)[0] == (1800, "firing", "gpu_power_cap", "gpu 4")


def test_error_counters_fire_on_growth_not_on_their_first_value_and_clear_after_hold() -> None:
    engine = HealthEngine("n1", rules_from_dict({"gpu_xid": {"hold_s": 100}}))

    def sample(t: int) -> DerivedNode:
        xid = 5 if t < 10 else 7  # 5 errors from before agentd started are the baseline
        return node([DerivedGpu(index=0, xid_total=xid, ecc_uncorrected_total=0)])

    changes = run(engine, range(200), sample)
    assert changes == [(10, "firing", "gpu_xid", "gpu 0"), (110, "cleared", "gpu_xid", "gpu 0")]


def test_oom_kill_of_a_job() -> None:
    engine = HealthEngine("n1")
    sample = lambda t: node(jobs=[DerivedCgroup(job_id="n1.4", oom_kills_total=0 if t < 3 else 1)])  # noqa: E731
    changes = run(engine, range(6), sample, [job("n1.4")])
    assert changes == [(3, "firing", "oom_kill", "job n1.4")]
    assert engine.active()[0].severity == "warning"


def test_stalled_job_fires_after_factor_times_its_usual_step_time_and_not_while_paused() -> None:
    engine = HealthEngine("n1", rules_from_dict({"job_stalled": {"min_s": 10, "factor": 5}}))
    # 2 s per step until t=40, then no progress.
    steps = lambda t: float(min(t, 40) // 2)  # noqa: E731
    sample = lambda t: node(jobs=[DerivedCgroup(job_id="n1.7", app={"step": steps(t)})])  # noqa: E731
    changes = run(engine, range(80), sample, [job("n1.7")])
    # last progress at t=40; usual step 2 s -> limit max(10, 5*2) = 10 s
    assert changes == [(50, "firing", "job_stalled", "job n1.7")]
    ev = engine.active()[0].evidence
    assert ev["usual_step_s"] == 2.0 and ev["limit_s"] == 10.0

    paused = HealthEngine("n1", rules_from_dict({"job_stalled": {"min_s": 10, "factor": 5}}))
    assert run(paused, range(40), sample, [job("n1.7")]) == []
    assert run(paused, range(40, 200), sample, [job("n1.7", state="paused")]) == []


def test_a_job_that_ends_clears_its_condition_alerts() -> None:
    engine = HealthEngine("n1", rules_from_dict({"gpu_idle_allocated": {"for_s": 5}}))
    sample = lambda t: node([DerivedGpu(index=0, sm_util_pct=0.0)])  # noqa: E731
    assert run(engine, range(10), sample, [job("n1.1", gpus=[0])]) == [(5, "firing", "gpu_idle_allocated", "gpu 0")]
    assert run(engine, range(10, 12), sample, [job("n1.1", state="succeeded", gpus=[0])]) == [
        (10, "cleared", "gpu_idle_allocated", "gpu 0")]


def test_pressure_rule_and_disabling_a_rule() -> None:
    sample = lambda t: node(mem_pressure_pct=55.0)  # noqa: E731
    on = HealthEngine("n1")
    assert run(on, range(70), sample) == [(60, "firing", "mem_pressure", "node")]
    off = HealthEngine("n1", rules_from_dict({"mem_pressure": {"enabled": False}}))
    assert run(off, range(70), sample) == []


def test_stale_node_fires_from_its_last_beat_and_clears_when_heard_or_unfollowed() -> None:
    live = NodeLiveness(HealthRules(), observer="relay-1")
    assert live.observe({"a": 100.0, "b": 100.0}, 102.0) == []
    fired = live.observe({"a": 106.0, "b": 100.0}, 106.0)
    assert [(c.state, c.alert.node) for c in fired] == [("firing", "b")]
    assert fired[0].alert.since_s == 100.0 and "relay-1" in fired[0].alert.message
    assert live.observe({"a": 107.0, "b": 100.0}, 107.0) == []  # fires once
    cleared = live.observe({"a": 108.0}, 108.0)  # b no longer followed
    assert [(c.state, c.alert.node) for c in cleared] == [("cleared", "b")]
    assert alerts_by_severity(live.active()) == {"critical": 0, "warning": 0, "info": 0}


def test_alert_event_data_round_trips_and_malformed_data_is_refused() -> None:
    engine = HealthEngine("n1", rules_from_dict({"oom_kill": {"hold_s": 1}}))
    run(engine, range(3), lambda t: node(jobs=[DerivedCgroup(job_id="j", oom_kills_total=t)]), [job("j")])
    alert = engine.active()[0]
    assert alert_from_data(alert_data(alert, "firing")) == (alert, "firing")
    assert alert_from_data({"rule": "x", "state": "firing"}) is None
    assert alert_from_data({**alert_data(alert, "firing"), "state": "exploded"}) is None
