"""SIGKILL loses at most about a second; a full disk or an unwritable path stops recording
with a clear RecordingError."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentd.protocol.messages import SampleMsg, SnapshotReply
from agentd.store.recording import Recorder, RecordingError, RecordingReader
from agentd.store.recording_synth import SyntheticNode

REPO = Path(__file__).resolve().parents[2]

WRITER = r"""
import sys, time
from agentd.protocol.messages import SampleMsg
from agentd.store.recording import Recorder
from agentd.store.recording_synth import SyntheticNode
gens = [SyntheticNode(f"n{i}", cores=8, start_wall_s=time.time()) for i in range(4)]
rec = Recorder(sys.argv[1], title="killed")
seq = 0
while True:
    seq += 1
    for g in gens:
        s = g.next()
        rec.feed(g.node, SampleMsg(node=g.node, seq=seq, sample=s))
    print(s.wall_s, flush=True)
    time.sleep(0.05)
"""


def test_kill9_mid_write_loses_at_most_about_a_second(tmp_path):
    path = tmp_path / "killed.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        last = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "writer died early"
            last = float(line)
            if path.exists() and time.monotonic() > deadline - 27:  # about 3 s of writing
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    with RecordingReader(path) as r:
        rng = r.time_range()
        assert rng is not None
        # samples are simulated 1 s apart in wall time but fed every ~0.05 s of real time: a
        # kill lands after the last commit (<= ~1.2 s lost, ~24 ticks) or during one, whose
        # transaction is then lost too (two commit intervals)
        assert last - rng[1] <= 2 * 24 + 1
        derived = list(r.iter_derived())
        assert len(derived) == sum(r.info().samples.values()) > 0


@pytest.fixture
def tiny_disk(tmp_path):
    """A 384 KiB tmpfs (real ENOSPC), unmounted afterwards."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=384k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_stops_with_a_clear_error(tiny_disk):
    path = tiny_disk / "full.db"
    gen = SyntheticNode("n0", cores=64)
    rec = Recorder(path, commit_interval_s=0)
    with pytest.raises(RecordingError) as err:
        for i in range(100_000):
            rec.feed("n0", SampleMsg(node="n0", seq=i + 1, sample=gen.next()))
    msg = str(err.value)
    assert "disk is full" in msg and str(path) in msg and "recording stopped" in msg
    with pytest.raises(RecordingError):  # stays stopped; never a bare sqlite3 error
        rec.feed("n0", SampleMsg(node="n0", seq=0, sample=gen.next()))
    rec.close()


@pytest.mark.parametrize("where,pattern", [
    ("missing-dir/x.db", "directory .* does not exist"),
    (".", "is a directory"),
])
def test_unwritable_paths(tmp_path, where, pattern):
    with pytest.raises(RecordingError, match=pattern):
        Recorder(tmp_path / where)


def test_read_only_location(tmp_path):
    with pytest.raises(RecordingError, match=r"cannot be (written|opened)"):
        Recorder("/proc/fleetdeck-test.db")


def test_commits_at_least_every_interval(tmp_path):
    path = tmp_path / "c.db"
    gen = SyntheticNode("n0", cores=2, gpus=1, jobs=1)
    rec = Recorder(path, commit_interval_s=0.2)
    try:
        rec.feed("n0", SnapshotReply(seq=0, inventory=gen.inventory(), samples=[gen.next()]))
        time.sleep(0.25)
        rec.feed("n0", SampleMsg(node="n0", seq=1, sample=gen.next()))
        other = sqlite3.connect(path)
        try:
            assert other.execute("SELECT count(*) FROM samples").fetchone()[0] == 2
        finally:
            other.close()
    finally:
        rec.close()


def test_open_chunk_survives_a_kill_and_the_next_recorder_finishes_it(tmp_path):
    path = tmp_path / "tail.db"
    gen = SyntheticNode("n0", cores=2, gpus=1, jobs=1)
    samples = [gen.next() for _ in range(13)]
    rec = Recorder(path, chunk_rows=5)
    for i, s in enumerate(samples[:8]):
        rec.feed("n0", SampleMsg(node="n0", seq=i + 1, sample=s))
    rec.flush()
    rec._conn.close()  # as a SIGKILL would leave it: no close(), the open chunk is in ``tail``
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT n0, n1 FROM chunks").fetchall() == [(0, 4)]
        assert [n for (n,) in conn.execute("SELECT n FROM tail ORDER BY n")] == [5, 6, 7]
    finally:
        conn.close()
    with RecordingReader(path) as r:
        assert r.samples("n0", 0, 2e9) == samples[:8]
    with Recorder(path, chunk_rows=5) as rec:
        for i, s in enumerate(samples[8:]):
            rec.feed("n0", SampleMsg(node="n0", seq=9 + i, sample=s))
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT n0, n1 FROM chunks ORDER BY n0").fetchall() == [(0, 4), (5, 9), (10, 12)]
        assert conn.execute("SELECT count(*) FROM tail").fetchone()[0] == 0
    finally:
        conn.close()
    with RecordingReader(path) as r:
        assert r.samples("n0", 0, 2e9) == samples
        assert r.state_at(samples[7].wall_s)["n0"].newer == samples[7]


def test_a_reader_follows_a_file_that_is_still_being_written(tmp_path):
    import msgspec

    path = tmp_path / "live.db"
    gen = SyntheticNode("n0", cores=2, gpus=1, jobs=1)
    samples = [gen.next() for _ in range(10)]
    # from sample 6 on a field appears: a new shape, written after the reader loaded the shapes
    samples[6:] = [msgspec.structs.replace(s, gpus=[msgspec.structs.replace(s.gpus[0], throttle_reasons=4)])
                   for s in samples[6:]]
    rec = Recorder(path, chunk_rows=3)
    try:
        for i, s in enumerate(samples[:5]):
            rec.feed("n0", SampleMsg(node="n0", seq=i + 1, sample=s))
        rec.flush()
        with RecordingReader(path) as r:
            assert r.samples("n0", 0, 2e9) == samples[:5]  # one chunk + two tail rows
            for i, s in enumerate(samples[5:]):
                rec.feed("n0", SampleMsg(node="n0", seq=6 + i, sample=s))
            rec.flush()
            assert r.samples("n0", 0, 2e9) == samples
    finally:
        rec.close()
