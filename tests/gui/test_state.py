"""ClusterState from hand-made snapshots and stream messages (no Qt)."""

import pytest

from agentd.protocol.jobs import Event
from agentd.protocol.messages import EventMsg, Heartbeat, JobMsg, SampleMsg
from gui.state import ClusterState, migration_fraction, throughput_of

from .gui_factories import job, sample, snapshot


def test_snapshot_then_samples_derive_rates_through_the_one_derive():
    st = ClusterState(clock=lambda: 1_000_010.0)
    st.apply_snapshot("n1", snapshot(samples=[sample(t=0.0), sample(t=1.0, busy_s=4.0, rx=1000)], jobs=[job()]))
    node = st.nodes["n1"]
    assert node.name == "n1"
    # 4 of 8 core-seconds busy over 1 s -> 50 %; loopback is not counted as network
    assert node.derived.cpu_pct == pytest.approx(50.0)
    assert node.derived.net_rx_bytes_per_s == pytest.approx(1000.0)
    t, v = st.series.get(("n1", "", "cpu_pct"))
    assert t.size == 2 and v[-1] == pytest.approx(50.0)
    rev = st.revision
    st.apply_message("n1", SampleMsg(node="n1", seq=11, sample=sample(t=2.0, busy_s=12.0, rx=3000)))
    assert st.revision > rev
    assert st.nodes["n1"].derived.cpu_pct == pytest.approx(100.0)
    assert st.series.last(("n1", "", "net_rx_bytes_per_s")) == pytest.approx(2000.0)
    assert st.series.last(("n1", "gpu1", "sm_util_pct")) == 50.0


def test_job_rows_carry_cpu_memory_and_throughput():
    st = ClusterState(clock=lambda: 1_000_010.0)
    j = job("n1.1", gpus=(0, 1))
    st.apply_snapshot("n1", snapshot(samples=[sample(t=0.0, jobs={"n1.1": 0}, tokens=0.0)], jobs=[j]))
    st.apply_message("n1", SampleMsg(node="n1", seq=11, sample=sample(t=2.0, jobs={"n1.1": 1_000_000}, tokens=500.0)))
    (row,) = st.job_rows()
    assert row.id == "n1.1" and row.node == "n1" and row.gpus == (0, 1)
    assert row.cpu_pct == pytest.approx(50.0)
    assert row.throughput == pytest.approx(250.0) and row.throughput_unit == "tok/s"
    assert st.series.last(("n1", "n1.1", "throughput")) == pytest.approx(250.0)
    assert [x.id for x in st.jobs_on_gpu("n1", 1)] == ["n1.1"]


def test_job_and_event_messages_and_structure_revision():
    st = ClusterState(clock=lambda: 1_000_010.0)
    st.apply_snapshot("n1", snapshot(jobs=[job("n1.1")]))
    srev = st.structure_revision
    st.apply_message("n1", JobMsg(node="n1", seq=11, job=job("n1.1", state="paused")))
    assert st.structure_revision == srev, "a state change is not a structural change"
    assert st.job("n1.1").state == "paused"
    st.apply_message("n1", JobMsg(node="n1", seq=12, job=job("n1.2")))
    assert st.structure_revision > srev
    st.apply_message("n1", EventMsg(node="n1", seq=13, event=Event(wall_s=1.0, node="n1", kind="action", message="paused n1.1")))
    st.apply_message("n1", Heartbeat(node="n1", seq=14, wall_s=2.0))
    assert st.events[-1].message == "paused n1.1" and st.events_total == 1
    st.add_local_event("pause of 'n1.1' failed: gone", ok=False)
    assert not st.events[-1].ok


def test_a_stream_message_older_than_a_reply_does_not_undo_it():
    # The pause reply (revision 2) can arrive before a "running" update the daemon built just
    # before the pause (revision 1); the table must not flick back to running.
    st = ClusterState(clock=lambda: 1_000_010.0)
    st.apply_snapshot("n1", snapshot(jobs=[job("n1.1", revision=1)]))
    st.apply_job("n1", job("n1.1", state="paused", revision=2))
    st.apply_message("n1", JobMsg(node="n1", seq=11, job=job("n1.1", state="running", revision=1, metrics={"x": 1.0})))
    assert st.job("n1.1").state == "paused"
    st.apply_message("n1", JobMsg(node="n1", seq=12, job=job("n1.1", state="running", revision=3)))
    assert st.job("n1.1").state == "running", "a newer change is applied"
    # A restarted daemon counts from 0 again; its snapshot replaces what the app knew.
    st.apply_snapshot("n1", snapshot(jobs=[job("n1.1", state="paused", revision=0)]))
    st.apply_message("n1", JobMsg(node="n1", seq=1, job=job("n1.1", state="running", revision=1)))
    assert st.job("n1.1").state == "running"


def test_finished_jobs_fade_out_and_link_state():
    now = [1_000_000.0]
    st = ClusterState(clock=lambda: now[0])
    st.apply_snapshot("n1", snapshot(jobs=[job("n1.1", state="succeeded", ended_s=1_000_000.0), job("n1.2")]))
    assert {j.id for j in st.visible_jobs("n1")} == {"n1.1", "n1.2"}
    now[0] += 3600
    assert [j.id for j in st.visible_jobs("n1")] == ["n1.2"]
    st.set_link("n1", "down", "no answer")
    assert st.summary() == {"nodes": 1, "down": 1}
    st.remove_node("n1")
    assert not st.nodes and st.series.get(("n1", "", "cpu_pct"))[0].size == 0


def test_restarted_daemon_snapshot_does_not_pair_across_boots():
    st = ClusterState()
    st.apply_snapshot("n1", snapshot(samples=[sample(t=100.0, busy_s=400.0, rx=10**9)]))
    st.apply_snapshot("n1", snapshot(samples=[sample(t=1.0, boot="b2"), sample(t=2.0, busy_s=2.0, rx=10, boot="b2")]))
    assert st.nodes["n1"].derived.net_rx_bytes_per_s == pytest.approx(10.0)
    assert st.nodes["n1"].derived.cpu_pct == pytest.approx(25.0)


def test_helpers():
    assert throughput_of({"samples_per_s": 3.0, "loss": 1.0}) == (3.0, "samples/s")
    assert throughput_of({"widgets_per_s": 2.0}) == (2.0, "widgets/s")
    assert throughput_of({"loss": 1.0}) is None
    assert migration_fraction({"bytes_sent": 5, "bytes_total": 10}) == 0.5
    assert migration_fraction({}) is None


def test_tokens_and_samples_are_separate_chartable_series():
    """A trainer's samples/s and an agent's tokens/s never share one axis."""
    from agentd.metrics import AppMetric
    from gui.state import METRIC_BY_KEY, ClusterState
    from tests.gui.gui_factories import job, sample, snapshot

    assert METRIC_BY_KEY[("job", "app:tokens_per_s")].label == "Tokens/s"
    st = ClusterState()
    s0 = sample("n1", 0.0)
    s1 = sample("n1", 1.0)
    import msgspec

    from agentd.metrics import CgroupSample

    jobs = [CgroupSample(job_id="n1.1"), CgroupSample(job_id="n1.2")]
    s0 = msgspec.structs.replace(s0, jobs=jobs, app=[AppMetric(job_id="n1.1", name="tokens", value=100, counter=True),
                                                      AppMetric(job_id="n1.2", name="samples", value=10, counter=True)])
    s1 = msgspec.structs.replace(s1, jobs=jobs, app=[AppMetric(job_id="n1.1", name="tokens", value=600, counter=True),
                                                      AppMetric(job_id="n1.2", name="samples", value=40, counter=True)])
    st.apply_snapshot("n1", snapshot("n1", samples=[s0, s1], jobs=[job("n1.1"), job("n1.2")]))
    assert st.series.last(("n1", "n1.1", "app:tokens_per_s")) == 500.0
    assert st.series.last(("n1", "n1.2", "app:samples_per_s")) == 30.0
    assert st.series.last(("n1", "n1.1", "app:samples_per_s")) is None
