"""Schema v1 recordings (one delta-coded row per sample) still open, and are upgraded to v2
(chunks) when a recorder appends to them."""

from __future__ import annotations

import sqlite3
import zlib
from pathlib import Path

import msgspec
import sqlite_utils

from agentd.metrics.derive import derive
from agentd.metrics.samples import NodeSample
from agentd.protocol.messages import SampleMsg
from agentd.store.recording import Recorder, RecordingReader
from agentd.store.recording_codec import xor_bytes
from agentd.store.recording_synth import SyntheticNode
from agentd.store.schema_recording import RECORDING_SCHEMA, SCHEMA_VERSION

from .conftest import START_S

_enc = msgspec.msgpack.Encoder()


def write_v1(path: Path, samples: list[NodeSample], keyframe_every: int = 5) -> None:
    """A recording as Fleetdeck with schema v1 wrote it (keyframes, XOR and dictionary deltas)."""
    conn = sqlite3.connect(path, isolation_level=None)
    db = sqlite_utils.Database(conn)
    RECORDING_SCHEMA.steps[1](db)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO meta(key, value) VALUES ('title', 'old'), ('start_s', ?)", (repr(START_S),))
    conn.execute("INSERT INTO nodes(id, key, name, endpoint) VALUES (1, 'n0', 'n0', '')")
    prev = None
    for n, s in enumerate(samples):
        raw = _enc.encode(s)
        if n % keyframe_every == 0:
            key_n, body = n, zlib.compress(raw)
        elif len(raw) == len(prev):
            body = b"x" + zlib.compress(xor_bytes(raw, prev))
        else:
            co = zlib.compressobj(zdict=prev)
            body = b"d" + co.compress(raw) + co.flush()
        prev = raw
        conn.execute("INSERT INTO samples(node_id, n, key_n, seq, wall_s, mono_s, gpu_count, body) VALUES (1,?,?,?,?,?,?,?)",
                     (n, key_n, n + 1, s.wall_s, s.mono_s, len(s.gpus), body))
    conn.close()


def v1_samples(count: int) -> list[NodeSample]:
    gen = SyntheticNode("n0", cores=2, gpus=2, jobs=1, start_wall_s=START_S)
    out = []
    for i in range(count):
        s = gen.next()
        if i % 4 == 3:  # a row whose msgpack length changes: a dictionary delta in v1
            s = msgspec.structs.replace(s, gpus=[msgspec.structs.replace(s.gpus[0], throttle_reasons=2**40), *s.gpus[1:]])
        out.append(s)
    return out


def test_v1_file_reads_without_changing_it(tmp_path):
    path = tmp_path / "old.db"
    samples = v1_samples(23)
    write_v1(path, samples)
    before = path.read_bytes()
    with RecordingReader(path) as r:
        assert r.schema_version == 1
        assert r.samples("n0", 0, 2e9) == samples
        assert list(r.iter_derived()) == [derive(s, p) for s, p in zip(samples, [None, *samples])]
        st = r.state_at(samples[12].wall_s)["n0"]
        assert (st.older, st.newer) == (samples[11], samples[12])
    assert path.read_bytes() == before


def test_appending_to_a_v1_file_upgrades_it(tmp_path):
    path = tmp_path / "old.db"
    samples = v1_samples(23)
    write_v1(path, samples)
    more = SyntheticNode("n0", cores=2, gpus=2, jobs=1, start_wall_s=samples[-1].wall_s + 10, seed=3)
    extra = [more.next() for _ in range(4)]
    with Recorder(path, chunk_rows=10) as rec:
        for i, s in enumerate(extra):
            rec.feed("n0", SampleMsg(node="n0", seq=100 + i, sample=s))
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "samples_v1" not in tables and {"chunks", "shapes", "tail"} <= tables
        assert conn.execute("SELECT count(*), max(n) FROM samples").fetchone() == (27, 26)
    finally:
        conn.close()
    with RecordingReader(path) as r:
        assert r.schema_version == SCHEMA_VERSION and r.info().title == "old"
        assert r.samples("n0", 0, 2e9) == samples + extra
