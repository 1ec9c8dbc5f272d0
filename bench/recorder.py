"""Benchmark the session recorder and reader; prints a markdown table.

    .venv/bin/python bench/recorder.py                 # full run (24 h x 16 nodes seek file, ~760 MiB)
    .venv/bin/python bench/recorder.py --seek-hours 1  # quick run

Measures: samples/s the Recorder sustains for 64 nodes (encode + batched insert + commit),
bytes per node-hour at 1 Hz (8 GPUs, 8 jobs; 8 and 32 cores), and on a generated 24 h x 16-node
recording: seek time (state of all nodes at a random T), a 1 h metric series, and how many
derived samples/s replay produces (100x playback of 16 nodes needs 1,600/s).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentd.protocol.messages import SampleMsg, SnapshotReply
from agentd.store.recording import Recorder, RecordingReader
from agentd.store.recording_synth import SyntheticNode

MIB = 1024 * 1024


def bench_inserts(tmp: Path, nodes: int = 64, ticks: int = 20, cores: int = 32) -> float:
    """Samples/s through Recorder.feed + one commit per tick (as 1 Hz live recording does)."""
    gens = [SyntheticNode(f"node-{i:02d}", cores=cores) for i in range(nodes)]
    batches = [[g.next() for g in gens] for _ in range(ticks)]
    path = tmp / "inserts.db"
    rec = Recorder(path, commit_interval_s=3600)
    for g in gens:
        rec.add_node(g.node)
    t0 = time.perf_counter()
    for seq, batch in enumerate(batches, 1):
        for s in batch:
            rec.feed(s.node, SampleMsg(node=s.node, seq=seq, sample=s))
        rec.flush()
    elapsed = time.perf_counter() - t0
    rec.close()
    return nodes * ticks / elapsed


def bench_size(tmp: Path, cores: int, seconds: int = 3600) -> float:
    """Bytes per node-hour: one node, 1 Hz, 8 GPUs, 8 jobs, for ``seconds``."""
    g = SyntheticNode("gpu-a", cores=cores, gpus=8, jobs=8)
    path = tmp / f"size-{cores}.db"
    with Recorder(path) as rec:
        rec.feed(g.node, SnapshotReply(seq=0, inventory=g.inventory(), samples=[g.next()]))
        for seq in range(1, seconds):
            rec.feed(g.node, SampleMsg(node=g.node, seq=seq, sample=g.next()))
    return path.stat().st_size * 3600 / seconds


def build_long_file(path: Path, hours: float, nodes: int, cores: int = 8, base_len: int = 3600) -> None:
    """A ``hours`` x ``nodes`` recording at 1 Hz. Each node's first ``base_len`` samples are
    encoded for real; the rest repeat those samples rows and chunk rows with shifted numbers
    and times (decode cost is the same; ``base_len`` is a multiple of the chunk size)."""
    with Recorder(path, title=f"bench {hours:g} h x {nodes} nodes") as rec:
        gens = [SyntheticNode(f"node-{i:02d}", cores=cores) for i in range(nodes)]
        for g in gens:
            rec.feed(g.node, SnapshotReply(seq=0, inventory=g.inventory(), samples=[g.next()]))
            for seq in range(1, base_len):
                rec.feed(g.node, SampleMsg(node=g.node, seq=seq, sample=g.next()))
        rec.flush()
    conn = sqlite3.connect(path)
    total = int(hours * 3600)
    cols = "node_id, n, seq, wall_s, mono_s, cpu_busy_s, cpu_total_s, load_1, mem_used_bytes, gpu_count, " \
           "gpu_mem_used_bytes, gpu_power_mw, job_count"
    base = conn.execute(f"SELECT {cols} FROM samples ORDER BY n, node_id").fetchall()
    chunks = conn.execute("SELECT node_id, n0, n1, body FROM chunks ORDER BY n0, node_id").fetchall()
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    rows: list[tuple] = []
    base_len = min(base_len, total)
    for rep in range(1, total // base_len):
        shift = rep * base_len
        for (node_id, n, _seq, wall, mono, *rest) in base:
            rows.append((node_id, n + shift, shift, wall + shift, mono + shift, *rest))
        conn.executemany("INSERT INTO chunks(node_id, n0, n1, body) VALUES (?,?,?,?)",
                         [(node_id, n0 + shift, n1 + shift, body) for node_id, n0, n1, body in chunks])
        if len(rows) > 200_000:
            conn.executemany(f"INSERT INTO samples({cols}) VALUES ({','.join('?' * 13)})", rows)
            conn.commit()
            rows.clear()
    if rows:
        conn.executemany(f"INSERT INTO samples({cols}) VALUES ({','.join('?' * 13)})", rows)
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def bench_long(path: Path, seeks: int = 30) -> dict[str, float]:
    out: dict[str, float] = {}
    with RecordingReader(path) as r:
        start, end = r.time_range()
        rnd = random.Random(1)
        times = []
        for _ in range(seeks):
            t = rnd.uniform(start, end)
            t0 = time.perf_counter()
            state = r.state_at(t)
            derived = [s.derived() for s in state.values()]
            times.append(time.perf_counter() - t0)
            assert all(d is not None for d in derived)
        out["seek_median_ms"] = statistics.median(times) * 1000
        out["seek_max_ms"] = max(times) * 1000
        node = r.nodes()[0]
        # the first hour holds really encoded samples (later hours repeat its rows, see above)
        t = start
        t0 = time.perf_counter()
        series = r.series("sm_util_pct", node, t, t + 3600, scope="gpu:3")
        out["series_gpu_1h_ms"] = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        r.series("gpu_power_mw", node, t, t + 3600)
        out["series_sql_1h_ms"] = (time.perf_counter() - t0) * 1000
        assert len(series) >= 3500
        t0 = time.perf_counter()
        n = sum(1 for _ in r.iter_derived(t, t + 60))
        out["replay_derived_per_s"] = n / (time.perf_counter() - t0)
    out["file_mib"] = path.stat().st_size / MIB
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seek-hours", type=float, default=24.0)
    ap.add_argument("--seek-nodes", type=int, default=16)
    ap.add_argument("--size-seconds", type=int, default=3600)
    ap.add_argument("--dir", type=Path, help="where to write the files (default: a temp dir, removed)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        tmp = Path(d)
        rows = []
        ins = bench_inserts(tmp)
        rows.append(("inserts, 64 nodes x 32 cores/8 GPUs/8 jobs (encode + insert + commit per tick)", f"{ins:,.0f} samples/s",
                     f"{ins / 64:,.0f} ticks/s of 64 nodes"))
        for cores in (8, 32):
            b = bench_size(tmp, cores, args.size_seconds)
            rows.append((f"size per node-hour, 1 Hz, 8 GPUs, 8 jobs, {cores} cores", f"{b / MIB:.2f} MiB", f"{b / 3600:,.0f} B/sample"))
        long = tmp / "long.db"
        t0 = time.perf_counter()
        build_long_file(long, args.seek_hours, args.seek_nodes)
        build_s = time.perf_counter() - t0
        res = bench_long(long)
        label = f"{args.seek_hours:g} h x {args.seek_nodes} nodes ({res['file_mib']:,.0f} MiB, built in {build_s:.0f} s)"
        rows.append((f"seek: state of all nodes at random T, {label}", f"{res['seek_median_ms']:.1f} ms median",
                     f"{res['seek_max_ms']:.1f} ms max of 30"))
        rows.append(("series: 1 h of one GPU's sm_util_pct (decode + derive_gpu)", f"{res['series_gpu_1h_ms']:.0f} ms", ""))
        rows.append(("series: 1 h of a SQL column (gpu_power_mw)", f"{res['series_sql_1h_ms']:.1f} ms", ""))
        rows.append(("replay: derived samples/s (16 nodes at 100x needs 1,600/s)", f"{res['replay_derived_per_s']:,.0f}/s",
                     f"{res['replay_derived_per_s'] / args.seek_nodes:,.0f}x real time for {args.seek_nodes} nodes"))
    print("| measure | result | note |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
