"""Recording then replaying yields exactly what live views derived, sample for sample."""

from __future__ import annotations

import sqlite3

import pytest

from agentd.metrics.derive import derive
from agentd.protocol.messages import SampleMsg, SnapshotReply
from agentd.store.recording import Recorder, RecordingReader
from agentd.store.recording_synth import SyntheticNode
from agentd.store.schema_recording import SCHEMA_VERSION

from .conftest import START_S, FakeClock, make_recording


def test_replay_equals_live(recording):
    with RecordingReader(recording.path) as r:
        replayed = list(r.iter_derived(START_S + 0.5, None))  # after the snapshot history
    live = sorted(recording.live, key=lambda d: (d.wall_s, d.node))
    assert replayed == live
    assert len(replayed) == 2 * 40


def test_replay_in_small_windows_matches_one_pass(recording):
    with RecordingReader(recording.path) as r:
        assert list(r.iter_derived(window_s=3.3)) == list(r.iter_derived(window_s=1000))


def test_snapshot_history_is_recorded_once(recording):
    with RecordingReader(recording.path) as r:
        info = r.info()
        stored = r.samples("n0", 0, 2e9)
    # two history samples from the snapshot + 40 stream samples, none twice
    assert info.samples == {"n0": 42, "n1": 42}
    assert stored == recording.samples["n0"]


def test_file_is_plain_sqlite_with_wal_and_version(recording):
    conn = sqlite3.connect(recording.path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = conn.execute("SELECT n.name, count(*), max(s.gpu_count) FROM samples s JOIN nodes n ON n.id = s.node_id "
                            "GROUP BY n.name").fetchall()
        assert rows == [("n0", 42, 2), ("n1", 42, 2)]
    finally:
        conn.close()


def test_state_at_gives_inventory_jobs_and_the_two_samples_around_t(recording):
    t = START_S + 15.5
    with RecordingReader(recording.path) as r:
        state = r.state_at(t)
    n0 = state["n0"]
    assert n0.inventory is not None and n0.inventory.node == "n0" and len(n0.inventory.gpus) == 2
    assert n0.newer.wall_s <= t < n0.newer.wall_s + 1
    assert n0.older.wall_s == n0.newer.wall_s - 1
    assert n0.derived() == next(d for d in recording.live if d.node == "n0" and d.wall_s == n0.newer.wall_s)
    assert [(j.id, j.state) for j in n0.jobs] == [("n0.1", "paused")]
    assert n0.link == "live"
    early = RecordingReader(recording.path)
    try:
        assert [(j.id, j.state) for j in early.state_at(START_S + 5)["n0"].jobs] == [("n0.1", "running")]
        snap = early.state_at(START_S + 5)["n1"].as_snapshot()
        assert snap is not None and len(snap.samples) == 2 and snap.inventory.node == "n1"
    finally:
        early.close()


def test_replay_opens_when_every_node_has_its_jobs_and_a_sample(tmp_path):
    """The first sample is snapshot history, dated before the snapshot that lists the jobs."""
    path = tmp_path / "late.db"
    make_recording(path, nodes=2, seconds=5)
    gen = SyntheticNode("late", gpus=1, jobs=1, start_wall_s=START_S + 30)
    with Recorder(path, clock=FakeClock(START_S + 31)) as rec:  # joined long after the start: not waited for
        rec.feed("late", SnapshotReply(seq=0, inventory=gen.inventory(), samples=[gen.next()]))
    with RecordingReader(path) as r:
        start, _ = r.time_range()
        opening = r.opening_time()
        assert start < opening < start + 5
        assert not any(st.jobs for st in r.state_at(start).values())
        at_open = r.state_at(opening)
        assert all(at_open[n].jobs and at_open[n].newer and at_open[n].link == "live" for n in ("n0", "n1"))
        assert r.opening_time(settle_s=60) >= START_S + 30


def test_events_keep_actor_and_result(recording):
    with RecordingReader(recording.path) as r:
        actions = r.events(kinds=["action"])
        everything = r.events()
        info = r.info()
    assert [(e.actor, e.ok, e.job_id) for e in actions] == [("alice", True, "n0.1"), ("bob", False, "n0.9")]
    assert info.actions == 2 and info.events == len(everything) == 4  # + one snapshot event per node


def test_metadata_title_notes_and_span(recording):
    with RecordingReader(recording.path) as r:
        info = r.info()
        assert info.title == "test session" and info.notes == ""
        r.set_meta(title="incident 42", notes="GPU3 throttled")
        assert (r.info().title, r.info().notes) == ("incident 42", "GPU3 throttled")
    assert info.nodes == ["n0", "n1"]
    assert info.start_s <= START_S - 1 and info.end_s >= START_S + 40
    assert info.app_version and info.schema_version == SCHEMA_VERSION and info.size_bytes > 0


def test_reopening_appends_a_new_chain(db_path):
    make_recording(db_path, nodes=1, seconds=5)
    gen = SyntheticNode("n0", cores=4, gpus=2, jobs=2, start_wall_s=START_S + 100)
    with Recorder(db_path) as rec:
        for i in range(5):
            rec.feed("n0", SampleMsg(node="n0", seq=i + 1, sample=gen.next()))
    with RecordingReader(db_path) as r:
        assert r.info().samples["n0"] == 7 + 5
        assert r.info().title == "test session"  # kept when no new title is given
        later = r.samples("n0", START_S + 100, 2e9)
        assert len(later) == 5 and later[0].wall_s == START_S + 101
        assert [g.reason for g in r.gaps()] == ["no samples"]


def test_counter_reset_on_daemon_restart_replays_as_live(db_path):
    a = SyntheticNode("n0", cores=2, gpus=1, jobs=1, boot_id="b1")
    b = SyntheticNode("n0", cores=2, gpus=1, jobs=1, boot_id="b2", seed=7, start_wall_s=START_S + 10)
    seq = [a.next() for _ in range(5)] + [b.next() for _ in range(5)]
    live, prev = [], None
    with Recorder(db_path) as rec:
        for i, s in enumerate(seq):
            rec.feed("n0", SampleMsg(node="n0", seq=i + 1, sample=s))
            live.append(derive(s, prev))
            prev = s
    with RecordingReader(db_path) as r:
        assert list(r.iter_derived()) == live
    assert live[5].interval_s == 0.0  # the new boot is not paired with the old one


@pytest.mark.parametrize("chunk_rows", [1, 2, 7])
def test_any_chunk_size_reads_back_the_same(tmp_path, chunk_rows):
    gen = SyntheticNode("n0", cores=3, gpus=2, jobs=2)
    samples = [gen.next() for _ in range(20)]
    path = tmp_path / f"k{chunk_rows}.db"
    with Recorder(path, chunk_rows=chunk_rows) as rec:
        rec.feed("n0", SnapshotReply(seq=0, inventory=gen.inventory(), samples=samples[:1]))
        for i, s in enumerate(samples[1:]):
            rec.feed("n0", SampleMsg(node="n0", seq=i + 1, sample=s))
    conn = sqlite3.connect(path)
    try:
        chunks = conn.execute("SELECT n0, n1 FROM chunks ORDER BY n0").fetchall()
        assert conn.execute("SELECT count(*) FROM tail").fetchone()[0] == 0  # close() seals the open chunk
    finally:
        conn.close()
    assert chunks[0] == (0, chunk_rows - 1) and chunks[-1][1] == 19 and len(chunks) == -(-20 // chunk_rows)
    with RecordingReader(path) as r:
        assert r.samples("n0", 0, 2e9) == samples
        for i in (0, 5, 13, 19):
            st = r.state_at(samples[i].wall_s)["n0"]
            assert st.newer == samples[i] and st.older == (samples[i - 1] if i else None)


def test_samples_whose_shape_changes_round_trip(tmp_path):
    """Optional fields appearing, values crossing msgpack size classes, process scans: a chunk
    with several shapes."""
    import msgspec

    from agentd.metrics.samples import ProcSample

    gen = SyntheticNode("n0", cores=2, gpus=2, jobs=1)
    samples = []
    for i in range(12):
        s = gen.next()
        if i % 3 == 1:  # an optional field appears and goes
            gpus = [msgspec.structs.replace(s.gpus[0], throttle_reasons=2**40 + i), *s.gpus[1:]]
            s = msgspec.structs.replace(s, gpus=gpus, boot_id=s.boot_id)
        if i % 5 == 0:  # a process scan tick
            s = msgspec.structs.replace(s, procs=[ProcSample(pid=i + 1, name="python", cpu_time_s=1.5 * i)])
        samples.append(s)
    path = tmp_path / "len.db"
    with Recorder(path) as rec:
        for i, s in enumerate(samples):
            rec.feed("n0", SampleMsg(node="n0", seq=i + 1, sample=s))
    conn = sqlite3.connect(path)
    shapes = conn.execute("SELECT count(*) FROM shapes").fetchone()[0]
    conn.close()
    assert shapes == 2  # scan ticks keep their shape: procs are stored apart
    with RecordingReader(path) as r:
        assert r.samples("n0", 0, 2e9) == samples
