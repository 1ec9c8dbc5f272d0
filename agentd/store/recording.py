"""Record the streams of one or more daemons to a SQLite file, and read it back by time.

:class:`Recorder` takes what a :class:`agentd.transport.client.NodeLink` yields (snapshots,
stream messages, link-state changes) and writes batched transactions, committing at least
every :data:`COMMIT_INTERVAL_S`, so a killed recorder loses about a second at most.

:class:`RecordingReader` answers the two questions replay asks: "what was the state at time
T" (inventory, job table, the two samples around T so :func:`agentd.metrics.derive` works)
and "samples of metric M for scope S between T1 and T2". Samples are stored raw, as streamed;
rates come from the same ``derive()`` as live, so replay shows exactly what was shown live.

Every failure a user can cause (a path that cannot be written, a full disk, a file that is
not a recording, a recording from a newer version) raises :class:`RecordingError` with a
message that names the file and the remedy.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import sqlite3
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import msgspec
import sqlite_utils

from agentd.metrics.derive import derive, derive_cgroup, derive_gpu
from agentd.metrics.samples import AppMetric, CgroupSample, DerivedNode, GpuSample, NodeInventory, NodeSample
from agentd.protocol.jobs import Event, JobInfo
from agentd.protocol.messages import EventMsg, Heartbeat, InventoryMsg, JobMsg, SampleMsg, SnapshotReply, StreamMsg
from agentd.store.recording_codec import (
    CHUNK_ROWS, Shape, ShapeBook, SplitSample, UnknownShape, decode_chunk, decode_sample, decode_v1_row, encode_chunk,
    split_sample,
)
from agentd.store.recording_schema import SCHEMA_VERSION, migrate, schema_version

__all__ = [
    "COMMIT_INTERVAL_S", "Gap", "LinkChange", "NodeState", "SnapshotMark", "RecordedNode", "Recorder", "RecordingError", "RecordingInfo",
    "RecordingReader", "SCHEMA_VERSION", "check_recording_file",
]

log = logging.getLogger(__name__)

#: The recorder commits at least this often: what a SIGKILL can lose.
COMMIT_INTERVAL_S = 1.0
#: Samples further apart than this many times the node's usual interval count as a gap.
GAP_FACTOR = 3.0
#: A replay opens once the nodes recorded from the start (joined within this many s) are known.
OPENING_SETTLE_S = 10.0
#: Tail rows are transient: cheap compression keeps their churn small.
TAIL_ZLIB_LEVEL = 1
#: Decoded chunk rows a reader keeps (each about CHUNK_ROWS x a few KiB of msgpack).
CHUNK_CACHE = 64
#: Events remembered per node to drop the copies a reconnect snapshot repeats.
EVENT_DEDUP_WINDOW = 2000
SQLITE_MAGIC = b"SQLite format 3\x00"

_enc = msgspec.msgpack.Encoder()
_inv_dec = msgspec.msgpack.Decoder(NodeInventory)
_job_dec = msgspec.msgpack.Decoder(JobInfo)


class RecordingError(Exception):
    """A recording cannot be written or read; the message says which file, why, and what to do."""


def app_version() -> str:
    try:
        from importlib.metadata import version

        return version("fleetdeck")
    except Exception:  # not installed (running from a checkout)
        return "dev"


# ---- opening files -------------------------------------------------------------------------


def _describe_sqlite_error(path: Path, exc: sqlite3.Error, writing: bool) -> str:
    text = str(exc)
    low = text.lower()
    if "full" in low:
        return f"recording {path}: the disk is full ({text}); free space or record to another disk"
    if "readonly" in low or "read-only" in low or "permission" in low:
        return f"recording {path} cannot be written ({text}); choose a writable path"
    if "unable to open" in low:
        where = path.parent if not path.parent.is_dir() else path
        return f"recording {path} cannot be opened ({text}); check that {where} exists and is writable"
    if "not a database" in low or "malformed" in low or "disk i/o" in low:
        return f"{path} is not a readable Fleetdeck recording ({text}); the file is damaged or truncated"
    verb = "written" if writing else "read"
    return f"recording {path} could not be {verb}: {text}"


def _connect(path: Path, *, create: bool) -> sqlite3.Connection:
    mode = "rwc" if create else "rw"
    if not create and not os.access(path, os.W_OK):
        mode = "ro"
    try:
        conn = sqlite3.connect(f"file:{path}?mode={mode}", uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        return conn
    except sqlite3.Error as exc:
        raise RecordingError(_describe_sqlite_error(path, exc, create)) from None


def check_recording_file(path: Path) -> None:
    """Fail early, in words, on a missing, empty, non-SQLite or truncated file."""
    if not path.exists():
        raise RecordingError(f"recording {path} does not exist; check the path")
    if path.is_dir():
        raise RecordingError(f"{path} is a directory, not a recording file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(100)
    except OSError as exc:
        raise RecordingError(f"recording {path} cannot be read: {exc.strerror}") from None
    if size == 0:
        raise RecordingError(f"{path} is empty (0 bytes); it is not a Fleetdeck recording")
    if not head.startswith(SQLITE_MAGIC):
        raise RecordingError(f"{path} is not a SQLite file, so not a Fleetdeck recording")
    if len(head) == 100:
        page_size = int.from_bytes(head[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(head[28:32], "big")
        wal = Path(f"{path}-wal")
        # The header's page count is only trustworthy when no WAL carries newer pages.
        if pages and size < pages * page_size and not (wal.exists() and wal.stat().st_size):
            raise RecordingError(
                f"{path} is truncated ({size} bytes, its header says {pages * page_size}); "
                "copy the whole file again"
            )


# ---- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkChange:
    """A recorded change of a node's link state."""

    state: str
    detail: str = ""


@dataclass(frozen=True)
class SnapshotMark:
    """The recorder received a snapshot here (a (re)connect): the node's state was replaced."""

    seq: int


@dataclass(frozen=True)
class RecordedNode:
    id: int
    key: str
    name: str
    endpoint: str


@dataclass(frozen=True)
class Gap:
    """A span with no data from a node: ``reason`` is "link <state>" or "no samples"."""

    node: str
    start_s: float
    end_s: float
    reason: str

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class RecordingInfo:
    path: str
    schema_version: int
    title: str
    notes: str
    app_version: str
    created_s: float | None
    start_s: float | None
    end_s: float | None
    nodes: list[str]
    samples: dict[str, int]
    events: int
    actions: int
    gaps: list[Gap]
    size_bytes: int

    @property
    def duration_s(self) -> float:
        if self.start_s is None or self.end_s is None:
            return 0.0
        return max(0.0, self.end_s - self.start_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path, "schema_version": self.schema_version, "title": self.title, "notes": self.notes,
            "app_version": self.app_version, "created_s": self.created_s, "start_s": self.start_s,
            "end_s": self.end_s, "duration_s": self.duration_s, "nodes": self.nodes, "samples": self.samples,
            "samples_total": sum(self.samples.values()), "events": self.events, "actions": self.actions,
            "gaps": [{"node": g.node, "start_s": g.start_s, "end_s": g.end_s, "duration_s": g.duration_s,
                      "reason": g.reason} for g in self.gaps],
            "size_bytes": self.size_bytes,
        }


@dataclass
class NodeState:
    """Everything known about one node at a moment of the recording."""

    node: str
    inventory: NodeInventory | None
    jobs: list[JobInfo]
    older: NodeSample | None  # the sample before ``newer`` (for derive)
    newer: NodeSample | None  # the last sample at or before the moment
    link: str  # "live", "stale", "down", "connecting" or "" when never recorded
    snapshot_seq: int = 0

    def derived(self) -> DerivedNode | None:
        return None if self.newer is None else derive(self.newer, self.older)

    def as_snapshot(self, events: list[Event] = ()) -> SnapshotReply | None:  # type: ignore[assignment]
        """This state in the shape a live source hands the views (for replay)."""
        if self.inventory is None:
            return None
        samples = [s for s in (self.older, self.newer) if s is not None]
        return SnapshotReply(seq=self.snapshot_seq, inventory=self.inventory, samples=samples, jobs=self.jobs,
                             events=list(events))


# ---- recorder --------------------------------------------------------------------------------


@dataclass
class _NodeCursor:
    id: int
    key: str
    n: int = 0  # next per-node sample number
    # the open chunk: (n, shape id, split sample) of samples not yet in a chunk row
    open_rows: list[tuple[int, int, SplitSample]] = field(default_factory=list)
    last_mono_s: float | None = None
    last_boot: str = ""
    seen_events: dict[tuple, None] = field(default_factory=dict)
    link: str = ""


class Recorder:
    """Write one recording; feed it what NodeLinks yield. Not thread-safe: one thread feeds it.

    ``clock`` gives wall seconds for things the stream does not time-stamp (job changes,
    inventory, link states). Raises :class:`RecordingError` when the file cannot be written;
    after that the recorder is closed and every further call raises the same error.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        title: str = "",
        notes: str = "",
        clock: Callable[[], float] = time.time,
        commit_interval_s: float = COMMIT_INTERVAL_S,
        chunk_rows: int = CHUNK_ROWS,
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        self.commit_interval_s = commit_interval_s
        self.chunk_rows = chunk_rows
        self._shapes = ShapeBook()
        self.samples_written = 0
        self.events_written = 0
        self._error: RecordingError | None = None
        self._nodes: dict[str, _NodeCursor] = {}
        self._pending: dict[str, list[tuple]] = {
            t: [] for t in ("samples", "tail", "chunks", "inventory", "snapshots", "jobs", "events", "links")
        }
        self._last_commit = time.monotonic()
        if self.path.is_dir():
            raise RecordingError(f"{self.path} is a directory; give a file name such as {self.path / 'session.db'}")
        if not self.path.parent.is_dir():
            raise RecordingError(f"cannot record to {self.path}: directory {self.path.parent} does not exist")
        existed = self.path.exists() and self.path.stat().st_size > 0
        if existed:
            check_recording_file(self.path)
        self._conn = _connect(self.path, create=True)
        self.db = sqlite_utils.Database(self._conn)
        try:
            self._guard_version(existed)
            if not existed:
                # the tail's rows come and go; incremental vacuum lets close() give their pages back
                self._conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            self._conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode: a committed transaction survives a process crash (SIGKILL);
            # only a power loss may roll back the last commits.
            self._conn.execute("PRAGMA synchronous = NORMAL")
            try:
                migrate(self.db)
            except (ValueError, msgspec.DecodeError) as exc:
                raise RecordingError(f"recording {self.path} could not be upgraded to schema {SCHEMA_VERSION} ({exc}); "
                                     "record to a new file") from None
            self._shapes = ShapeBook(self._conn.execute("SELECT id, template FROM shapes").fetchall())
            now = self.clock()
            with self._conn:
                self._conn.execute("BEGIN")
                meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
                defaults = {"created_s": repr(now), "start_s": repr(now), "app_version": app_version(),
                            "title": title or f"Recording {time.strftime('%Y-%m-%d %H:%M', time.localtime(now))}",
                            "notes": notes, "host": os.uname().nodename}
                for k, v in defaults.items():
                    if k not in meta:
                        self._conn.execute("INSERT INTO meta(key, value) VALUES (?, ?)", (k, v))
                if existed and title:
                    self._conn.execute("UPDATE meta SET value = ? WHERE key = 'title'", (title,))
                self._conn.execute("COMMIT")
            for row in self._conn.execute("SELECT id, key FROM nodes"):
                self._load_node(row[0], row[1])
        except sqlite3.Error as exc:
            self._conn.close()
            raise RecordingError(_describe_sqlite_error(self.path, exc, True)) from None
        except RecordingError:
            self._conn.close()
            raise

    def _guard_version(self, existed: bool) -> None:
        if not existed:
            return
        version = schema_version(self._conn)
        if version > SCHEMA_VERSION:
            raise RecordingError(
                f"recording {self.path} has schema version {version}; this Fleetdeck writes up to "
                f"{SCHEMA_VERSION}; upgrade Fleetdeck or record to a new file"
            )
        if version == 0 and self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise RecordingError(f"{self.path} is a SQLite file but not a Fleetdeck recording; choose another path")

    def _load_node(self, node_id: int, key: str) -> _NodeCursor:
        row = self._conn.execute("SELECT max(n) FROM samples WHERE node_id = ?", (node_id,)).fetchone()
        cur = _NodeCursor(id=node_id, key=key)
        cur.n = 0 if row[0] is None else row[0] + 1
        # a recorder that was killed left its open chunk in ``tail``: carry on filling it
        for n, body in self._conn.execute("SELECT n, body FROM tail WHERE node_id = ? ORDER BY n", (node_id,)):
            split = split_sample(decode_sample(zlib.decompress(body)))
            cur.open_rows.append((n, self._shapes.id_for(split), split))
        self._nodes[key] = cur
        return cur

    # ---- feeding ----

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def add_node(self, key: str, endpoint: str = "", name: str = "") -> None:
        """Declare a node (the caller's stable key: a cluster-file name or the endpoint)."""
        self._check()
        cur = self._nodes.get(key)
        try:
            if cur is None:
                with self._conn:
                    c = self._conn.execute("INSERT INTO nodes(key, name, endpoint) VALUES (?, ?, ?)", (key, name or key, endpoint))
                self._load_node(int(c.lastrowid), key)
            elif name or endpoint:
                with self._conn:
                    self._conn.execute(
                        "UPDATE nodes SET name = coalesce(nullif(?, ''), name), endpoint = coalesce(nullif(?, ''), endpoint) WHERE id = ?",
                        (name, endpoint, cur.id),
                    )
        except sqlite3.Error as exc:
            self._fail(exc)

    def _node(self, key: str) -> _NodeCursor:
        cur = self._nodes.get(key)
        if cur is None:
            self.add_node(key)
            cur = self._nodes[key]
        return cur

    def feed(self, key: str, item: SnapshotReply | StreamMsg, recv_wall_s: float | None = None) -> None:
        """Record one snapshot or stream message of node ``key``; commits when due."""
        self._check()
        now = self.clock() if recv_wall_s is None else recv_wall_s
        cur = self._node(key)
        if isinstance(item, SnapshotReply):
            self._on_snapshot(cur, item, now)
        elif isinstance(item, SampleMsg):
            self._on_sample(cur, item.sample, item.seq)
        elif isinstance(item, EventMsg):
            self._on_event(cur, item.event, item.seq)
        elif isinstance(item, JobMsg):
            self._pending["jobs"].append((cur.id, now, item.seq, item.job.id, item.job.state, _enc.encode(item.job)))
        elif isinstance(item, InventoryMsg):
            self._on_inventory(cur, item.inventory, now)
        elif isinstance(item, Heartbeat):
            pass  # liveness is recorded as link states, not beat by beat
        else:
            raise TypeError(f"cannot record {type(item).__name__}")
        self.maybe_flush()

    def link_state(self, key: str, state: str, detail: str = "", wall_s: float | None = None) -> None:
        """Record a change of a node's link state ("connecting", "live", "stale", "down")."""
        self._check()
        cur = self._node(key)
        if state == cur.link:
            return
        cur.link = state
        self._pending["links"].append((cur.id, self.clock() if wall_s is None else wall_s, state, detail))
        self.maybe_flush()

    def _on_snapshot(self, cur: _NodeCursor, snap: SnapshotReply, now: float) -> None:
        self._on_inventory(cur, snap.inventory, now)
        self._pending["snapshots"].append((cur.id, now, snap.seq))
        for job in snap.jobs:
            # seq NULL marks a snapshot's copy of the job table (not a change on the stream)
            self._pending["jobs"].append((cur.id, now, None, job.id, job.state, _enc.encode(job)))
        for ev in snap.events:
            self._on_event(cur, ev, 0)
        for s in snap.samples:
            self._on_sample(cur, s, 0)

    def _on_inventory(self, cur: _NodeCursor, inv: NodeInventory, now: float) -> None:
        self._pending["inventory"].append((cur.id, now, _enc.encode(inv)))
        self._pending.setdefault("_names", []).append((inv.node, cur.id))

    def _on_event(self, cur: _NodeCursor, ev: Event, seq: int) -> None:
        k = (ev.wall_s, ev.kind, ev.job_id, ev.message)
        if k in cur.seen_events:
            return  # a reconnect snapshot repeats recent events
        cur.seen_events[k] = None
        if len(cur.seen_events) > EVENT_DEDUP_WINDOW:
            del cur.seen_events[next(iter(cur.seen_events))]
        data = json.dumps(ev.data, default=str) if ev.data else None
        self._pending["events"].append(
            (cur.id, ev.wall_s, seq, ev.kind, ev.job_id or None, ev.actor or None, int(ev.ok), ev.message, data)
        )

    def _on_sample(self, cur: _NodeCursor, s: NodeSample, seq: int) -> None:
        if cur.last_mono_s is not None and s.boot_id == cur.last_boot and s.mono_s <= cur.last_mono_s:
            return  # already recorded (snapshot history repeats the last samples)
        cur.last_mono_s, cur.last_boot = s.mono_s, s.boot_id
        split = split_sample(s)
        n = cur.n
        cur.n += 1
        cur.open_rows.append((n, self._shapes.id_for(split), split))
        if len(cur.open_rows) >= self.chunk_rows:
            self._seal(cur)
        else:
            self._pending["tail"].append((cur.id, n, zlib.compress(_enc.encode(s), TAIL_ZLIB_LEVEL)))
        h = s.host
        t = h.cpu_total
        total = t.user_s + t.nice_s + t.system_s + t.idle_s + t.iowait_s + t.irq_s + t.softirq_s + t.steal_s
        self._pending["samples"].append((
            cur.id, n, seq or None, s.wall_s, s.mono_s,
            total - t.idle_s - t.iowait_s, total, h.load_1, h.mem_used_bytes,
            len(s.gpus), sum(g.mem_used_bytes or 0 for g in s.gpus), sum(g.power_mw or 0 for g in s.gpus), len(s.jobs),
        ))

    def _seal(self, cur: _NodeCursor) -> None:
        """Turn the node's open chunk into a chunk row (its tail rows go in the same commit)."""
        rows = cur.open_rows
        if not rows:
            return
        cur.open_rows = []
        n0, n1 = rows[0][0], rows[-1][0]
        # tail rows of this chunk that were never committed need not be written at all
        self._pending["tail"] = [t for t in self._pending["tail"] if t[0] != cur.id or not n0 <= t[1] <= n1]
        body = encode_chunk([(sid, split) for _, sid, split in rows])
        self._pending["chunks"].append((cur.id, rows[0][0], rows[-1][0], body))
    # ---- writing ----

    def maybe_flush(self) -> None:
        """Commit if the last commit is older than the commit interval."""
        if time.monotonic() - self._last_commit >= self.commit_interval_s:
            self.flush()

    def flush(self) -> None:
        """Write everything pending in one transaction."""
        self._check()
        p = self._pending
        self._last_commit = time.monotonic()
        try:
            c = self._conn
            c.execute("BEGIN")
            c.executemany("INSERT INTO shapes(id, template, slots) VALUES (?,?,?)", self._shapes.take_pending())
            if p["samples"]:
                c.executemany(
                    "INSERT INTO samples(node_id, n, seq, wall_s, mono_s, cpu_busy_s, cpu_total_s, load_1, "
                    "mem_used_bytes, gpu_count, gpu_mem_used_bytes, gpu_power_mw, job_count) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    p["samples"],
                )
            c.executemany("INSERT INTO tail(node_id, n, body) VALUES (?,?,?)", p["tail"])
            c.executemany("INSERT INTO chunks(node_id, n0, n1, body) VALUES (?,?,?,?)", p["chunks"])
            c.executemany("DELETE FROM tail WHERE node_id = ? AND n BETWEEN ? AND ?",
                          [(node_id, n0, n1) for node_id, n0, n1, _ in p["chunks"]])
            c.executemany("INSERT INTO inventory(node_id, wall_s, body) VALUES (?,?,?)", p["inventory"])
            c.executemany("UPDATE nodes SET name = ? WHERE id = ?", p.get("_names", []))
            c.executemany("INSERT INTO snapshots(node_id, wall_s, seq) VALUES (?,?,?)", p["snapshots"])
            c.executemany("INSERT INTO jobs(node_id, wall_s, seq, job_id, state, body) VALUES (?,?,?,?,?,?)", p["jobs"])
            c.executemany(
                "INSERT INTO events(node_id, wall_s, seq, kind, job_id, actor, ok, message, data) VALUES (?,?,?,?,?,?,?,?,?)",
                p["events"],
            )
            c.executemany("INSERT INTO links(node_id, wall_s, state, detail) VALUES (?,?,?,?)", p["links"])
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('end_s', ?)", (repr(self.clock()),))
            c.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._fail(exc)
        self.samples_written += len(p["samples"])
        self.events_written += len(p["events"])
        for v in p.values():
            v.clear()

    def _fail(self, exc: sqlite3.Error) -> None:
        self._error = RecordingError(_describe_sqlite_error(self.path, exc, True) + "; recording stopped")
        log.error("%s", self._error)
        try:
            self._conn.close()
        except sqlite3.Error:
            pass
        raise self._error

    def size_bytes(self) -> int:
        """Bytes on disk, WAL included."""
        total = 0
        for p in (self.path, Path(f"{self.path}-wal")):
            try:
                total += p.stat().st_size
            except OSError:
                pass
        return total

    def close(self) -> None:
        """Flush, checkpoint the WAL into the file and close. Idempotent."""
        if self._error is not None:
            return
        try:
            for cur in self._nodes.values():
                self._seal(cur)
            self.flush()
            self._conn.execute("PRAGMA incremental_vacuum").fetchall()  # one page per step
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
        except sqlite3.Error as exc:
            self._fail(exc)
        self._error = RecordingError(f"recording {self.path} is closed")

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- reader ----------------------------------------------------------------------------------


class _GpuView(msgspec.Struct, kw_only=True):
    """Only what derive_gpu needs: decoding skips the rest of the sample (much faster)."""

    node: str
    mono_s: float
    wall_s: float
    boot_id: str = ""
    gpus: list[GpuSample] = []


class _JobView(msgspec.Struct, kw_only=True):
    node: str
    mono_s: float
    wall_s: float
    boot_id: str = ""
    jobs: list[CgroupSample] = []
    app: list[AppMetric] = []


_gpu_view_dec = msgspec.msgpack.Decoder(_GpuView)
_job_view_dec = msgspec.msgpack.Decoder(_JobView)

#: Raw columns of the samples table that :meth:`RecordingReader.series` reads without decoding.
SQL_COLUMNS = ("load_1", "mem_used_bytes", "gpu_count", "gpu_mem_used_bytes", "gpu_power_mw", "job_count",
               "cpu_busy_s", "cpu_total_s")


def _pair_interval(new: Any, old: Any | None) -> float:
    """The interval derive() would use for this pair, 0 when it would not pair them."""
    if old is None or old.boot_id != new.boot_id or old.node != new.node:
        return 0.0
    return max(0.0, new.mono_s - old.mono_s)


class RecordingReader:
    """Read a recording by time. Opening checks the file; every method raises RecordingError
    (never a bare sqlite3 error) when the file turns out to be damaged."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        check_recording_file(self.path)
        self._conn = _connect(self.path, create=False)
        try:
            version = schema_version(self._conn)
            if version > SCHEMA_VERSION:
                raise RecordingError(
                    f"recording {self.path} has schema version {version}; this Fleetdeck reads up to "
                    f"{SCHEMA_VERSION}; upgrade Fleetdeck to open it"
                )
            if version == 0 or not self._has_table("samples"):
                raise RecordingError(f"{self.path} is a SQLite file but not a Fleetdeck recording")
            self.schema_version = version
            self._shapes: dict[int, Shape] = {} if version == 1 else self._load_shapes()
            self._chunk_cache: dict[int, list[bytes]] = {}
            self.db = sqlite_utils.Database(self._conn)
            self._nodes = [RecordedNode(*r) for r in self._conn.execute("SELECT id, key, name, endpoint FROM nodes ORDER BY id")]
        except sqlite3.Error as exc:
            self._conn.close()
            raise RecordingError(_describe_sqlite_error(self.path, exc, False)) from None
        except RecordingError:
            self._conn.close()
            raise
        self._by_name = {n.name: n for n in self._nodes}
        self._by_name.update({n.key: n for n in self._nodes if n.key not in self._by_name})

    def _has_table(self, name: str) -> bool:
        return self._conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None

    def _q(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise RecordingError(_describe_sqlite_error(self.path, exc, False)) from None

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "RecordingReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- metadata ----

    def meta(self) -> dict[str, str]:
        return dict(self._q("SELECT key, value FROM meta"))

    def set_meta(self, *, title: str | None = None, notes: str | None = None) -> None:
        """Edit the title and/or notes (the only editable metadata)."""
        try:
            with self._conn:
                self._conn.execute("BEGIN")
                for k, v in (("title", title), ("notes", notes)):
                    if v is not None:
                        self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (k, v))
                self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise RecordingError(_describe_sqlite_error(self.path, exc, True)) from None

    def nodes(self) -> list[str]:
        """Recorded node names, in the order they were first seen."""
        return [n.name for n in self._nodes]

    def _node(self, name: str) -> RecordedNode:
        node = self._by_name.get(name)
        if node is None:
            raise RecordingError(f"node {name!r} is not in recording {self.path}; it holds: {', '.join(self.nodes()) or 'no nodes'}")
        return node

    def time_range(self) -> tuple[float, float] | None:
        """Wall time of the first and last sample, or None when there are no samples."""
        # per node, one aggregate per query: each is then a single (node_id, wall_s) index probe,
        # where min() and max() over the whole table would scan every sample
        lo = [self._q("SELECT min(wall_s) FROM samples WHERE node_id = ?", (n.id,))[0][0] for n in self._nodes]
        hi = [self._q("SELECT max(wall_s) FROM samples WHERE node_id = ?", (n.id,))[0][0] for n in self._nodes]
        lo = [x for x in lo if x is not None]
        hi = [x for x in hi if x is not None]
        return (min(lo), max(hi)) if lo else None

    def opening_time(self, settle_s: float = OPENING_SETTLE_S) -> float | None:
        """Where a replay opens: the first moment every node recorded from the start has its
        first snapshot (jobs), its first sample and (when links were recorded) a live link. A
        snapshot's sample history is dated before the snapshot itself, so the very first sample
        comes a moment before anything is known of the jobs. Nodes that joined more than
        ``settle_s`` after the start do not hold it back."""
        rng = self.time_range()
        if rng is None:
            return None
        start, end = rng
        ready = []
        for n in self._nodes:
            marks = [self._q(f"SELECT min(wall_s) FROM {table} WHERE node_id = ?", (n.id,))[0][0]
                     for table in ("samples", "snapshots")]
            live = self._q("SELECT min(wall_s) FROM links WHERE node_id = ? AND state = 'live'", (n.id,))[0][0]
            if None not in marks and max(marks) <= start + settle_s:
                ready.append(max(marks) if live is None or live > start + settle_s else max(*marks, live))
        return min(end, max(ready, default=start))

    def info(self) -> RecordingInfo:
        meta = self.meta()
        counts = {n.name: 0 for n in self._nodes}
        by_id = {n.id: n.name for n in self._nodes}
        for node_id, count in self._q("SELECT node_id, count(*) FROM samples GROUP BY node_id"):
            counts[by_id.get(node_id, str(node_id))] = count
        rng = self.time_range()

        def num(key: str) -> float | None:
            try:
                return float(meta[key])
            except (KeyError, ValueError):
                return None

        start = num("start_s")
        end = num("end_s")
        if rng is not None:
            start = rng[0] if start is None else min(start, rng[0])
            end = rng[1] if end is None else max(end, rng[1])
        size = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        return RecordingInfo(
            path=str(self.path), schema_version=self.schema_version, title=meta.get("title", ""),
            notes=meta.get("notes", ""), app_version=meta.get("app_version", ""), created_s=num("created_s"),
            start_s=start, end_s=end, nodes=self.nodes(), samples=counts,
            events=self._q("SELECT count(*) FROM events")[0][0],
            actions=self._q("SELECT count(*) FROM events WHERE kind = 'action'")[0][0],
            gaps=self.gaps(), size_bytes=size,
        )

    # ---- samples ----

    def _bodies(self, node: RecordedNode, n_from: int, n_to: int) -> list[tuple[int, bytes]]:
        """(n, msgpack) of the samples n_from..n_to of a node, in order."""
        try:
            if self.schema_version == 1:
                return self._bodies_v1(node.id, n_from, n_to)
            out: list[tuple[int, bytes]] = []
            first = self._q("SELECT max(n0) FROM chunks WHERE node_id = ? AND n0 <= ?", (node.id, n_from))[0][0]
            chunks = self._q("SELECT id, n0, n1 FROM chunks WHERE node_id = ? AND n0 BETWEEN ? AND ? ORDER BY n0",
                             (node.id, n_from if first is None else first, n_to))
            for chunk_id, n0, n1 in chunks:
                if n1 < n_from:
                    continue
                raws = self._chunk(chunk_id)
                out += [(n0 + i, r) for i, r in enumerate(raws[max(0, n_from - n0): n_to - n0 + 1], max(0, n_from - n0))]
            if not chunks or chunks[-1][2] < n_to:
                out += [(n, zlib.decompress(b)) for n, b in self._q(
                    "SELECT n, body FROM tail WHERE node_id = ? AND n BETWEEN ? AND ? ORDER BY n", (node.id, n_from, n_to))]
            if len(out) > 1 and any(a[0] >= b[0] for a, b in zip(out, out[1:])):
                out = sorted(dict(out).items())  # a chunk sealed while we read: keep each n once
            return out
        except (ValueError, zlib.error, msgspec.DecodeError) as exc:
            raise RecordingError(f"recording {self.path}: samples of node {node.name!r} are damaged ({exc})") from None

    def _chunk(self, chunk_id: int) -> list[bytes]:
        """msgpack of every sample of a chunk row (a few recently used chunks are kept)."""
        hit = self._chunk_cache.pop(chunk_id, None)
        if hit is None:
            rows = self._q("SELECT body FROM chunks WHERE id = ?", (chunk_id,))
            if not rows:
                raise ValueError(f"chunk {chunk_id} vanished")
            body = rows[0][0]
            try:
                hit = decode_chunk(body, self._shapes)
            except UnknownShape:  # a recorder may still be writing this file: load its new shapes
                self._shapes.update(self._load_shapes())
                hit = decode_chunk(body, self._shapes)
            if len(self._chunk_cache) >= CHUNK_CACHE:
                del self._chunk_cache[next(iter(self._chunk_cache))]
        self._chunk_cache[chunk_id] = hit
        return hit

    def _load_shapes(self) -> dict[int, Shape]:
        return {i: Shape.from_row(t, o) for i, t, o in self._q("SELECT id, template, slots FROM shapes")}

    def _bodies_v1(self, node_id: int, n_from: int, n_to: int) -> list[tuple[int, bytes]]:
        """Schema v1 (read only): rows n_from..n_to decoded forward from the keyframe of n_from."""
        key = self._q("SELECT key_n FROM samples WHERE node_id = ? AND n = ?", (node_id, n_from))
        rows = self._q("SELECT n, n = key_n, body FROM samples WHERE node_id = ? AND n BETWEEN ? AND ? ORDER BY n",
                       (node_id, key[0][0] if key else n_from, n_to))
        out: list[tuple[int, bytes]] = []
        prev: bytes | None = None
        for n, is_key, body in rows:
            prev = decode_v1_row(prev, bool(is_key), body)
            if n >= n_from:
                out.append((n, prev))
        return out

    def _raw_between(self, node: RecordedNode, t1: float, t2: float, before: int = 0,
                     lo_open: bool = False) -> list[bytes]:
        """msgpack of the samples with t1 <= wall_s <= t2 (t1 < wall_s when ``lo_open``), plus
        ``before`` samples before those."""
        op = ">" if lo_open else ">="
        row = self._q(
            f"SELECT min(n), max(n) FROM samples WHERE node_id = ? AND wall_s {op} ? AND wall_s <= ?", (node.id, t1, t2)
        )[0]
        if row[0] is None:
            if not before:
                return []
            last = self._q("SELECT max(n) FROM samples WHERE node_id = ? AND wall_s < ?", (node.id, t1))[0][0]
            if last is None:
                return []
            row = (last + 1, last)
        n_from, n_to = max(0, row[0] - before), row[1]
        return [raw for _, raw in self._bodies(node, n_from, n_to)]

    def samples(self, node: str, t1: float, t2: float, *, before: int = 0) -> list[NodeSample]:
        """Raw samples of ``node`` with wall time in [t1, t2], oldest first, plus ``before``
        samples preceding t1 (pass 1 so the first one can be derived)."""
        return [decode_sample(r) for r in self._raw_between(self._node(node), t1, t2, before)]

    def derived(self, node: str, t1: float, t2: float) -> list[DerivedNode]:
        """What live showed for ``node`` between t1 and t2: derive() of each sample and the one before."""
        out = []
        prev: NodeSample | None = None
        for s in self.samples(node, t1, t2, before=1):
            if s.wall_s >= t1:
                out.append(derive(s, prev))
            prev = s
        return out

    def iter_derived(self, t1: float | None = None, t2: float | None = None, nodes: list[str] | None = None,
                     window_s: float = 300.0) -> Iterator[DerivedNode]:
        """Derived values of all (or some) nodes in time order (ties by node), read a window at
        a time so memory stays flat; each sample is derived against its predecessor."""
        rng = self.time_range()
        if rng is None:
            return
        t1 = rng[0] if t1 is None else max(t1, rng[0])
        t2 = rng[1] if t2 is None else min(t2, rng[1])
        names = nodes or self.nodes()
        rns = [self._node(n) for n in names]
        prev: dict[str, NodeSample | None] = {}
        for rn in rns:
            before = self._raw_between(rn, t1, t1 - 1.0, before=1)
            prev[rn.name] = decode_sample(before[-1]) if before else None
        lo, first = t1, True
        while lo <= t2:
            hi = min(t2, lo + window_s)
            streams = []
            for rn in rns:
                raws = self._raw_between(rn, lo, hi, lo_open=not first)
                streams.append([(s.wall_s, rn.name, s) for s in map(decode_sample, raws)])
            for _, name, s in heapq.merge(*streams, key=lambda x: (x[0], x[1])):
                yield derive(s, prev[name])
                prev[name] = s
            if hi >= t2:
                break
            lo, first = hi, False

    def series(self, metric: str, node: str, t1: float, t2: float, scope: str = "") -> list[tuple[float, float | None]]:
        """(wall_s, value) of metric ``metric`` of ``node`` between t1 and t2.

        ``scope`` "" (node): a DerivedNode field ("cpu_pct", "net_rx_bytes_per_s") or a raw
        column of the samples table (:data:`SQL_COLUMNS`, read by SQL alone, fastest).
        ``scope`` "gpu:N": a DerivedGpu field ("sm_util_pct", "power_w", "nvlink_tx_bytes_per_s").
        ``scope`` "job:ID": a DerivedCgroup field ("cpu_pct", "mem_current_bytes") or an app
        metric ("app.tokens_per_s"). Rates come from the same derive functions as live.
        """
        rn = self._node(node)
        if not scope and metric in SQL_COLUMNS:
            return [(w, v) for w, v in self._q(
                f"SELECT wall_s, {metric} FROM samples WHERE node_id = ? AND wall_s BETWEEN ? AND ? ORDER BY n",
                (rn.id, t1, t2))]
        raws = self._raw_between(rn, t1, t2, before=1)
        out: list[tuple[float, float | None]] = []
        if not scope:
            if metric not in DerivedNode.__struct_fields__:
                raise RecordingError(f"unknown node metric {metric!r}; use a DerivedNode field or one of {', '.join(SQL_COLUMNS)}")
            prev_s = None
            for r in raws:
                s = decode_sample(r)
                if s.wall_s >= t1:
                    out.append((s.wall_s, getattr(derive(s, prev_s), metric)))
                prev_s = s
            return out
        kind, _, ident = scope.partition(":")
        if kind == "gpu":
            index = int(ident)
            prev_g = None
            for r in raws:
                g = _gpu_view_dec.decode(r)
                if g.wall_s >= t1:
                    interval = _pair_interval(g, prev_g)
                    new = next((x for x in g.gpus if x.index == index), None)
                    old = next((x for x in prev_g.gpus if x.index == index), None) if interval > 0 and prev_g else None
                    if new is not None:
                        out.append((g.wall_s, getattr(derive_gpu(new, old, interval), metric)))
                prev_g = g
            return out
        if kind == "job":
            prev_j = None
            for r in raws:
                j = _job_view_dec.decode(r)
                if j.wall_s >= t1:
                    interval = _pair_interval(j, prev_j)
                    new_c = next((x for x in j.jobs if x.job_id == ident), None)
                    paired = interval > 0 and prev_j is not None
                    old_c = next((x for x in prev_j.jobs if x.job_id == ident), None) if paired else None
                    if new_c is not None:
                        d = derive_cgroup(new_c, old_c, interval, [m for m in j.app if m.job_id == ident],
                                          [m for m in prev_j.app if m.job_id == ident] if paired else [])
                        value = d.app.get(metric[4:]) if metric.startswith("app.") else getattr(d, metric)
                        out.append((j.wall_s, value))
                prev_j = j
            return out
        raise RecordingError(f"unknown scope {scope!r}; use '', 'gpu:N' or 'job:ID'")

    def next_sample_time(self, t: float) -> float | None:
        """Wall time of the first sample of any node after ``t`` (None at the end)."""
        times = [self._q("SELECT min(wall_s) FROM samples WHERE node_id = ? AND wall_s > ?", (n.id, t))[0][0] for n in self._nodes]
        times = [x for x in times if x is not None]
        return min(times) if times else None

    def previous_sample_time(self, t: float) -> float | None:
        """Wall time of the last sample of any node before ``t`` (None at the start)."""
        times = [self._q("SELECT max(wall_s) FROM samples WHERE node_id = ? AND wall_s < ?", (n.id, t))[0][0] for n in self._nodes]
        times = [x for x in times if x is not None]
        return max(times) if times else None

    # ---- state at T ----

    def state_at(self, t: float, node: str | None = None) -> dict[str, NodeState]:
        """State of every node (or one) at wall time ``t``: inventory, jobs, last two samples, link."""
        names = [node] if node else self.nodes()
        out: dict[str, NodeState] = {}
        for name in names:
            rn = self._node(name)
            inv_row = self._q("SELECT body FROM inventory WHERE node_id = ? AND wall_s <= ? ORDER BY wall_s DESC, id DESC LIMIT 1",
                              (rn.id, t))
            if not inv_row:  # before the first snapshot: show the first inventory
                inv_row = self._q("SELECT body FROM inventory WHERE node_id = ? ORDER BY id LIMIT 1", (rn.id,))
            snap = self._q("SELECT wall_s, seq FROM snapshots WHERE node_id = ? AND wall_s <= ? ORDER BY wall_s DESC, id DESC LIMIT 1",
                           (rn.id, t))
            snap_wall, snap_seq = snap[0] if snap else (float("-inf"), 0)
            jobs = [_job_dec.decode(b) for (b,) in self._q(
                "SELECT body FROM jobs WHERE id IN (SELECT max(id) FROM jobs WHERE node_id = ? AND wall_s >= ? "
                "AND wall_s <= ? GROUP BY job_id) ORDER BY id", (rn.id, snap_wall, t))]
            last = self._q("SELECT n FROM samples WHERE node_id = ? AND wall_s <= ? ORDER BY wall_s DESC LIMIT 1", (rn.id, t))
            older = newer = None
            if last:
                n = last[0][0]
                try:
                    pair = [decode_sample(r) for _, r in self._bodies(rn, max(0, n - 1), n)]
                except msgspec.DecodeError as exc:
                    raise RecordingError(f"recording {self.path}: samples of node {name!r} are damaged ({exc})") from None
                if not pair:
                    raise RecordingError(f"recording {self.path}: sample {n} of node {name!r} is missing; the file is damaged")
                newer = pair[-1]
                older = pair[0] if len(pair) == 2 else None
            link = self._q("SELECT state FROM links WHERE node_id = ? AND wall_s <= ? ORDER BY wall_s DESC, id DESC LIMIT 1",
                           (rn.id, t))
            out[name] = NodeState(
                node=name, inventory=_inv_dec.decode(inv_row[0][0]) if inv_row else None, jobs=jobs, older=older,
                newer=newer, link=link[0][0] if link else "", snapshot_seq=snap_seq or 0,
            )
        return out

    # ---- events and gaps ----

    def events(self, t1: float | None = None, t2: float | None = None, kinds: Iterable[str] = ()) -> list[Event]:
        """Events (job state changes, control actions with actor and result...) in time order."""
        sql = "SELECT e.wall_s, n.name, e.kind, e.message, e.job_id, e.actor, e.ok, e.data FROM events e JOIN nodes n ON n.id = e.node_id WHERE 1"
        params: list[Any] = []
        if t1 is not None:
            sql += " AND e.wall_s >= ?"
            params.append(t1)
        if t2 is not None:
            sql += " AND e.wall_s <= ?"
            params.append(t2)
        kinds = list(kinds)
        if kinds:
            sql += f" AND e.kind IN ({','.join('?' * len(kinds))})"
            params += kinds
        sql += " ORDER BY e.wall_s, e.id"
        return [
            Event(wall_s=w, node=node, kind=k, message=m, job_id=j or "", actor=a or "", ok=bool(ok),
                  data=json.loads(d) if d else {})
            for w, node, k, m, j, a, ok, d in self._q(sql, params)
        ]

    def gaps(self, min_gap_s: float | None = None) -> list[Gap]:
        """Spans without data per node: link not live (from recorded link states), or samples
        further apart than GAP_FACTOR x the node's median interval (e.g. recorder stopped)."""
        gaps: list[Gap] = []
        end_all = self.time_range()
        for rn in self._nodes:
            spans: list[Gap] = []
            links = self._q("SELECT wall_s, state FROM links WHERE node_id = ? ORDER BY wall_s, id", (rn.id,))
            down_since: tuple[float, str] | None = None
            seen_live = False
            for w, state in links:
                if state == "live":
                    if down_since is not None and seen_live:
                        spans.append(Gap(rn.name, down_since[0], w, f"link {down_since[1]}"))
                    down_since = None
                    seen_live = True
                elif state in ("stale", "down") and down_since is None and seen_live:
                    down_since = (w, state)
            if down_since is not None and end_all is not None:
                spans.append(Gap(rn.name, down_since[0], max(end_all[1], down_since[0]), f"link {down_since[1]}"))
            walls = [w for (w,) in self._q("SELECT wall_s FROM samples WHERE node_id = ? ORDER BY n", (rn.id,))]
            if len(walls) > 2:
                steps = sorted(b - a for a, b in zip(walls, walls[1:]))
                typical = steps[len(steps) // 2]
                limit = max(GAP_FACTOR * typical, min_gap_s or 0.0)
                for a, b in zip(walls, walls[1:]):
                    if b - a > limit and not any(g.start_s < b and g.end_s > a for g in spans):
                        spans.append(Gap(rn.name, a, b, "no samples"))
            gaps += sorted(spans, key=lambda g: g.start_s)
        return gaps

    # ---- messages for a replay source ----

    def messages(self, t1: float, t2: float, window_s: float = 60.0) -> Iterator[tuple[float, str, Any]]:
        """Everything recorded in (t1, t2], in time order, as (wall_s, node, item): item is a
        SampleMsg, JobMsg, EventMsg, InventoryMsg, a LinkChange or a SnapshotMark (a reconnect
        snapshot: get its content with ``state_at(wall_s, node)``). Read a window at a time;
        stretches with nothing recorded are skipped, not walked."""
        start = t1
        while start < t2:
            nxt = self._next_item_time(start)
            if nxt is None or nxt > t2:
                return
            start = max(start, nxt - 1e-6)
            end = min(t2, start + window_s)
            yield from self._messages_window(start, end)
            start = end

    def _next_item_time(self, t: float) -> float | None:
        """Wall time of the first recorded thing of any kind after ``t``."""
        times = [self.next_sample_time(t)]
        for table in ("jobs", "events", "inventory", "links", "snapshots"):
            times.append(self._q(f"SELECT min(wall_s) FROM {table} WHERE wall_s > ?", (t,))[0][0])
        found = [x for x in times if x is not None]
        return min(found) if found else None

    def _messages_window(self, t1: float, t2: float) -> list[tuple[float, str, Any]]:
        items: list[tuple[float, int, str, Any]] = []
        names = {n.id: n.name for n in self._nodes}
        for rn in self._nodes:
            rows = self._q("SELECT min(n), max(n) FROM samples WHERE node_id = ? AND wall_s > ? AND wall_s <= ?", (rn.id, t1, t2))[0]
            if rows[0] is None:
                continue
            seqs = dict(self._q("SELECT n, seq FROM samples WHERE node_id = ? AND n BETWEEN ? AND ?", (rn.id, rows[0], rows[1])))
            for n, raw in self._bodies(rn, rows[0], rows[1]):
                s = decode_sample(raw)
                items.append((s.wall_s, 1, rn.name, SampleMsg(node=s.node, seq=seqs.get(n) or 0, sample=s)))
        for node_id, w, seq, body in self._q("SELECT node_id, wall_s, seq, body FROM jobs WHERE wall_s > ? AND wall_s <= ? "
                                              "AND seq IS NOT NULL ORDER BY id", (t1, t2)):
            job = _job_dec.decode(body)
            items.append((w, 0, names[node_id], JobMsg(node=job.node, seq=seq or 0, job=job)))
        for ev in self.events(t1, t2):
            if ev.wall_s > t1:
                items.append((ev.wall_s, 2, ev.node, EventMsg(node=ev.node, seq=0, event=ev)))
        for node_id, w, body in self._q("SELECT node_id, wall_s, body FROM inventory WHERE wall_s > ? AND wall_s <= ?", (t1, t2)):
            inv = _inv_dec.decode(body)
            items.append((w, 0, names[node_id], InventoryMsg(node=inv.node, seq=0, inventory=inv)))
        for node_id, w, state, detail in self._q("SELECT node_id, wall_s, state, detail FROM links WHERE wall_s > ? AND wall_s <= ?", (t1, t2)):
            items.append((w, 0, names[node_id], LinkChange(state, detail or "")))
        for node_id, w, seq in self._q("SELECT node_id, wall_s, seq FROM snapshots WHERE wall_s > ? AND wall_s <= ?", (t1, t2)):
            items.append((w, 0, names[node_id], SnapshotMark(seq or 0)))
        items.sort(key=lambda x: (x[0], x[1]))
        return [(w, node, item) for w, _, node, item in items]
