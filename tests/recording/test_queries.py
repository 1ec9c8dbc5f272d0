"""Metric series by scope, gaps, and the ordered message feed a replay source uses."""

from __future__ import annotations

import pytest

from agentd.metrics.derive import derive_cgroup, derive_gpu
from agentd.protocol.messages import EventMsg, JobMsg, SampleMsg
from agentd.store.recording import LinkChange, RecordedNodeState, RecordingError, RecordingReader, SnapshotMark

from .conftest import START_S, make_recording


def test_node_series_uses_derive(recording):
    with RecordingReader(recording.path) as r:
        got = r.series("cpu_pct", "n1", START_S + 5, START_S + 9)
    want = [(d.wall_s, d.cpu_pct) for d in recording.live if d.node == "n1" and START_S + 5 <= d.wall_s <= START_S + 9]
    assert got == want and len(got) == 5


def test_gpu_and_job_series_match_the_full_derive(recording):
    t1, t2 = START_S + 3, START_S + 30
    live = [d for d in recording.live if d.node == "n0" and t1 <= d.wall_s <= t2]
    with RecordingReader(recording.path) as r:
        power = r.series("power_w", "n0", t1, t2, scope="gpu:1")
        nvlink = r.series("nvlink_tx_bytes_per_s", "n0", t1, t2, scope="gpu:1")
        cpu = r.series("cpu_pct", "n0", t1, t2, scope="job:n0.2")
        tokens = r.series("app.tokens_per_s", "n0", t1, t2, scope="job:n0.2")
    assert power == [(d.wall_s, d.gpus[1].power_w) for d in live]
    assert nvlink == [(d.wall_s, d.gpus[1].nvlink_tx_bytes_per_s) for d in live]
    assert cpu == [(d.wall_s, d.jobs[1].cpu_pct) for d in live]
    assert tokens == [(d.wall_s, d.jobs[1].app["tokens_per_s"]) for d in live]
    assert all(v is not None and v > 0 for _, v in nvlink)
    assert derive_gpu and derive_cgroup  # the reader uses these very functions


def test_sql_column_series_needs_no_decoding(recording):
    raw = recording.samples["n0"]
    with RecordingReader(recording.path) as r:
        power = r.series("gpu_power_mw", "n0", START_S, START_S + 3)
    assert power == [(s.wall_s, sum(g.power_mw for g in s.gpus)) for s in raw if START_S <= s.wall_s <= START_S + 3]


def test_unknown_metric_scope_or_node_is_a_recording_error(recording):
    with RecordingReader(recording.path) as r:
        with pytest.raises(RecordingError, match="unknown node metric 'bogus'"):
            r.series("bogus", "n0", START_S, START_S + 3)
        with pytest.raises(RecordingError, match="unknown scope"):
            r.series("x", "n0", START_S, START_S + 3, scope="disk:0")
        with pytest.raises(RecordingError, match=r"node 'n9' is not in recording .* it holds: n0, n1"):
            r.samples("n9", 0, 1)


def test_link_drop_shows_as_gap_not_garbage(db_path):
    made = make_recording(db_path, seconds=30, drop={"n1": (10, 17)})
    with RecordingReader(db_path) as r:
        gaps = r.gaps()
        replayed = list(r.iter_derived(START_S + 0.5, None))
        state = r.state_at(START_S + 14)["n1"]
    assert [(g.node, g.reason) for g in gaps] == [("n1", "link down")]
    assert gaps[0].start_s == START_S + 11 and gaps[0].end_s == START_S + 19
    assert isinstance(state, RecordedNodeState)  # not to be confused with gui.state.NodeState
    assert state.link == "down" and state.newer.wall_s < START_S + 11
    assert replayed == sorted(made.live, key=lambda d: (d.wall_s, d.node))
    after = next(d for d in replayed if d.node == "n1" and d.wall_s > START_S + 11)
    # the first sample after the gap is derived over the whole gap, as live did: no spike
    assert after.interval_s == pytest.approx(9.0) and after.cpu_pct <= 100


def test_messages_come_in_time_order_with_links_and_snapshots(recording):
    with RecordingReader(recording.path) as r:
        items = list(r.messages(START_S - 10, START_S + 40, window_s=7))
    times = [w for w, _, _ in items]
    assert times == sorted(times)
    kinds = {type(i).__name__ for _, _, i in items}
    assert kinds >= {"SampleMsg", "JobMsg", "EventMsg", "LinkChange", "SnapshotMark"}
    samples = [i for _, n, i in items if isinstance(i, SampleMsg) and n == "n0"]
    assert [m.sample for m in samples] == recording.samples["n0"]
    assert [m.seq for m in samples[2:5]] == [1, 2, 3]
    jobs = [i for _, _, i in items if isinstance(i, JobMsg)]
    assert [(j.job.id, j.job.state) for j in jobs] == [("n0.1", "paused")]
    assert any(isinstance(i, EventMsg) and i.event.actor == "bob" for _, _, i in items)
    assert any(isinstance(i, LinkChange) and i.state == "live" for _, _, i in items)
    assert sum(isinstance(i, SnapshotMark) for _, _, i in items) == 2
