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

A recording may come from anyone (a colleague's file, a download), so opening one never runs
anything stored in it and never costs more than a bounded amount of memory and time: only
regular files are opened (a FIFO would block, a device never ends), read-only, with
``trusted_schema`` off, no extensions, ``cell_size_check`` on and a cap on the size of any one
value; a file whose schema holds views, triggers, virtual tables or generated columns is
refused before anything is read (see :func:`check_schema`); chunk decoding is bounded
(recording_codec.py); a damaged chunk is skipped and counted (:attr:`RecordingReader.damage`),
the rest replays around the gap; any one query stops after :data:`QUERY_TIME_LIMIT_S`.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
import os
import sqlite3
import stat
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
    CHUNK_ROWS, MAX_SAMPLE_BYTES, Shape, ShapeBook, SplitSample, UnknownShape, decode_chunk, decode_sample,
    decode_v1_row, encode_chunk, inflate, split_sample,
)
from agentd.store.recording_schema import SCHEMA_VERSION, migrate, schema_version

__all__ = [
    "COMMIT_INTERVAL_S", "Damage", "Gap", "LinkChange", "NodeState", "SnapshotMark", "RecordedNode", "Recorder", "RecordingError", "RecordingInfo",
    "RecordingReader", "SCHEMA_VERSION", "check_recording_file", "check_schema",
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

# Bounds for reading files from anyone (docs/recording.md, "Opening untrusted recordings").
#: No single value (string or blob) read from a recording may be longer (SQLITE_LIMIT_LENGTH).
MAX_VALUE_BYTES = 32 * 2**20
#: Any one query of a reader is interrupted after this long (a forged file can make SQL slow).
QUERY_TIME_LIMIT_S = 60.0
#: Schema objects, nodes, shapes and node-name lengths a recording may declare.
MAX_SCHEMA_OBJECTS = 200
MAX_NODES = 10_000
MAX_NAME_CHARS = 1024
MAX_SHAPES = 100_000
MAX_SHAPE_BYTES = 64 * 2**20
#: Metadata values (title, notes...) are read up to this many characters.
MAX_META_CHARS = 64 * 1024
#: Wall times outside this range (seconds since 1970) are not times (negative, 1e300, inf).
MIN_WALL_S, MAX_WALL_S = 0.0, 1e11
#: A read of samples by time may span at most this many more samples than it returns: more
#: means the samples are far out of time order (a forged file); reading on would cost memory.
MAX_DISORDER = 5000
#: The most events :meth:`RecordingReader.events` returns at once; gaps listed per node.
MAX_EVENTS = 200_000
MAX_GAPS_PER_NODE = 1000
#: Steps between samples looked at to find a node's usual interval (the median).
GAP_MEDIAN_STEPS = 10_001
#: The tables a recording of each schema version holds; each must be a plain table.
TABLES = {1: ("meta", "nodes", "samples", "inventory", "snapshots", "jobs", "events", "links")}
TABLES[2] = TABLES[1] + ("chunks", "tail", "shapes")

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


def _harden(conn: sqlite3.Connection, *, read_only: bool) -> None:
    """Settings for a file that may come from anyone: nothing stored in it runs, nothing it
    holds is bigger than :data:`MAX_VALUE_BYTES`, no query runs for ever."""
    # Functions with side effects may not be used from the schema (views, triggers, defaults,
    # generated columns, expression indexes): the schema cannot make us do anything.
    conn.execute("PRAGMA trusted_schema = OFF")
    # A damaged b-tree cell is reported as corruption instead of read past its page.
    conn.execute("PRAGMA cell_size_check = ON")
    conn.execute("PRAGMA mmap_size = 0")
    if hasattr(conn, "enable_load_extension"):
        conn.enable_load_extension(False)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    if read_only:
        conn.execute("PRAGMA query_only = ON")


def _time_limit(conn: sqlite3.Connection) -> list[float]:
    """Interrupt any statement of ``conn`` that runs past the deadline in the returned list
    (monotonic seconds; 0 = none); the owner sets it before each query."""
    deadline = [0.0]

    def too_long() -> int:
        return 1 if deadline[0] and time.monotonic() > deadline[0] else 0

    conn.set_progress_handler(too_long, 200_000)
    return deadline


def _connect(path: Path, *, create: bool, writable: bool = True) -> sqlite3.Connection:
    """A connection to ``path``: created (rwc), read-write (rw) or read-only (ro, the default
    of readers, so that nothing a reader does can change the file)."""
    mode = "rwc" if create else ("rw" if writable else "ro")
    if mode == "rw" and not os.access(path, os.W_OK):
        mode = "ro"
    try:
        # The path goes into a URI: characters that mean something there are escaped.
        from urllib.parse import quote

        conn = sqlite3.connect(f"file:{quote(str(path))}?mode={mode}", uri=True, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        _harden(conn, read_only=mode == "ro")
        return conn
    except sqlite3.Error as exc:
        raise RecordingError(_describe_sqlite_error(path, exc, create)) from None


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _not_regular(path: Path, mode: int) -> RecordingError:
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    via = " (through a symbolic link)" if path.is_symlink() else ""
    return RecordingError(f"{path} is {kind}{via}, not a recording file; give the path of a .db file")


def check_recording_file(path: Path) -> None:
    """Fail early, in words, on a missing, empty, non-SQLite or truncated file, and on anything
    that is not a regular file (a directory, FIFO, socket or device, also behind a symlink).
    Never blocks: a FIFO is recognised without opening it for a blocking read."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise RecordingError(f"recording {path} does not exist; check the path") from None
    except OSError as exc:
        raise RecordingError(f"recording {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO since stat(), open() must not wait
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _not_regular(path, st.st_mode)
            head = os.pread(fd, 100, 0)
        finally:
            os.close(fd)
    except OSError as exc:
        raise RecordingError(f"recording {path} cannot be read: {exc.strerror}") from None
    size = st.st_size
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


def check_schema(conn: sqlite3.Connection, path: Path, version: int) -> None:
    """Refuse a file whose schema could run something or stand in for our tables: views,
    triggers, virtual tables, generated columns, or a table of ours that is missing. Reads
    only sqlite_master and table_xinfo, before any row of the recording is read."""
    try:
        objects = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master LIMIT ?",
                               (MAX_SCHEMA_OBJECTS + 1,)).fetchall()
    except sqlite3.Error as exc:
        raise RecordingError(_describe_sqlite_error(path, exc, False)) from None
    if len(objects) > MAX_SCHEMA_OBJECTS:
        raise RecordingError(f"{path} declares more than {MAX_SCHEMA_OBJECTS} tables and indexes; "
                             "it is not a Fleetdeck recording")
    for kind, name, table, sql in objects:
        if kind in ("view", "trigger"):
            raise RecordingError(
                f"{path} contains a {kind} ({name!r}); Fleetdeck recordings have none and a {kind} could run "
                "SQL stored in the file, so it is not opened; ask for the original recording")
        if kind == "table" and isinstance(sql, str) and sql.lstrip().upper().startswith("CREATE VIRTUAL"):
            raise RecordingError(f"{path} contains a virtual table ({name!r}); Fleetdeck recordings have none, "
                                 "so it is not opened")
    tables = {name for kind, name, _, _ in objects if kind == "table"}
    for name in TABLES.get(version, ()):
        if name not in tables:
            raise RecordingError(f"{path} has no table {name!r}; it is not a complete Fleetdeck recording "
                                 f"(schema {version})")
        try:
            generated = [c[1] for c in conn.execute(f"PRAGMA table_xinfo({name})") if c[6] not in (0, 1)]
        except sqlite3.Error as exc:
            raise RecordingError(_describe_sqlite_error(path, exc, False)) from None
        if generated:
            raise RecordingError(f"{path}: table {name!r} has computed (generated) column {generated[0]!r}; "
                                 "Fleetdeck recordings have none, so it is not opened")


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
        except (ValueError, msgspec.DecodeError) as exc:  # a damaged tail row of the open chunk
            self._conn.close()
            raise RecordingError(f"recording {self.path} cannot be appended to: its last samples are damaged ({exc}); "
                                 "record to a new file") from None

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
        # appending inserts rows: a trigger stored in the file would run on each of them
        check_schema(self._conn, self.path, version)

    def _load_node(self, node_id: int, key: str) -> _NodeCursor:
        row = self._conn.execute("SELECT max(n) FROM samples WHERE node_id = ?", (node_id,)).fetchone()
        cur = _NodeCursor(id=node_id, key=key)
        cur.n = 0 if row[0] is None else row[0] + 1
        # a recorder that was killed left its open chunk in ``tail``: carry on filling it
        for n, body in self._conn.execute("SELECT n, body FROM tail WHERE node_id = ? ORDER BY n", (node_id,)):
            split = split_sample(decode_sample(inflate(body, MAX_SAMPLE_BYTES)))
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


@dataclass(frozen=True)
class Damage:
    """Samples n0..n1 of ``node`` could not be read (a damaged chunk or tail row): skipped."""

    node: str
    n0: int
    n1: int
    reason: str


class RecordingReader:
    """Read a recording by time. Opening checks the file; every method raises RecordingError
    (never a bare sqlite3 error) when the file turns out to be damaged beyond reading.

    The file is opened read-only (only :meth:`set_meta` writes, on a connection of its own) and checked
    before any row is read: :func:`check_recording_file`, :func:`check_schema`, bounds on the
    counts and sizes of nodes and shapes, and each node's time range. Damaged sample chunks
    found while reading are skipped and listed in :attr:`damage` (and in :meth:`gaps`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        check_recording_file(self.path)
        self._conn = _connect(self.path, create=False, writable=False)
        self._deadline = _time_limit(self._conn)
        #: Sample ranges skipped because they could not be decoded, in the order found.
        self.damage: list[Damage] = []
        self._damaged_chunks: set[int] = set()
        #: Rows of other tables (inventory, jobs, events) skipped because they could not be decoded.
        self.damaged_rows = 0
        try:
            version = schema_version(self._conn)
            if version > SCHEMA_VERSION:
                raise RecordingError(
                    f"recording {self.path} has schema version {version}; this Fleetdeck reads up to "
                    f"{SCHEMA_VERSION}; upgrade Fleetdeck to open it"
                )
            if version <= 0 or not self._has_table("samples"):
                raise RecordingError(f"{self.path} is a SQLite file but not a Fleetdeck recording")
            check_schema(self._conn, self.path, version)
            self.schema_version = version
            self._check_sizes()
            self._shapes: dict[int, Shape] = {} if version == 1 else self._load_shapes()
            self._chunk_cache: dict[int, list[bytes]] = {}
            self.db = sqlite_utils.Database(self._conn)
            self._nodes = [RecordedNode(*r) for r in self._q("SELECT id, key, name, endpoint FROM nodes ORDER BY id")]
            self._check_times()
        except sqlite3.Error as exc:
            self._conn.close()
            raise RecordingError(_describe_sqlite_error(self.path, exc, False)) from None
        except RecordingError:
            self._conn.close()
            raise
        self._by_name = {n.name: n for n in self._nodes}
        self._by_name.update({n.key: n for n in self._nodes if n.key not in self._by_name})

    def _check_sizes(self) -> None:
        """Refuse counts and sizes no recording has before loading nodes and shapes whole."""
        count, longest, bad = self._q(
            "SELECT count(*), max(coalesce(length(key), 0), coalesce(length(name), 0), coalesce(length(endpoint), 0)), "
            "sum(typeof(id) != 'integer' OR typeof(key) != 'text' OR typeof(name) != 'text' "
            "OR typeof(endpoint) NOT IN ('text', 'null')) FROM nodes")[0]
        if count > MAX_NODES:
            raise RecordingError(f"recording {self.path} lists {count} nodes; Fleetdeck reads at most {MAX_NODES}")
        if (longest or 0) > MAX_NAME_CHARS:
            raise RecordingError(f"recording {self.path} has a node name of {longest} characters "
                                 f"(at most {MAX_NAME_CHARS}); the file is damaged or forged")
        if bad:
            raise RecordingError(f"recording {self.path}: {bad} row(s) of table 'nodes' have values of the wrong type; "
                                 "the file is damaged or forged")
        if self.schema_version >= 2:
            count, total, bad = self._q("SELECT count(*), sum(length(template) + length(slots)), "
                                        "sum(typeof(id) != 'integer' OR typeof(template) != 'blob' "
                                        "OR typeof(slots) != 'blob') FROM shapes")[0]
            if count > MAX_SHAPES or (total or 0) > MAX_SHAPE_BYTES:
                raise RecordingError(f"recording {self.path} holds {count} sample shapes of {total} bytes (at most "
                                     f"{MAX_SHAPES} and {MAX_SHAPE_BYTES}); the file is damaged or forged")
            if bad:
                raise RecordingError(f"recording {self.path}: {bad} row(s) of table 'shapes' have values of the wrong "
                                     "type; the file is damaged or forged")

    def _check_times(self) -> None:
        """Each node's first and last sample time must be a time: a number between 1970 and
        :data:`MAX_WALL_S` (not NULL, text, negative, 1e300 or inf). One index probe each:
        text and blobs sort after numbers, so a non-number shows up as the maximum."""
        for rn in self._nodes:
            lo, hi = self._q("SELECT min(wall_s), max(wall_s) FROM samples WHERE node_id = ?", (rn.id,))[0]
            null = self._q("SELECT 1 FROM samples WHERE node_id = ? AND wall_s IS NULL LIMIT 1", (rn.id,))
            for value in (lo, hi, None if not null else "NULL"):
                if value is None:
                    continue
                ok = isinstance(value, (int, float)) and math.isfinite(value) and MIN_WALL_S <= value <= MAX_WALL_S
                if not ok:
                    raise RecordingError(
                        f"recording {self.path}: node {rn.name!r} has a sample time of {value!r}, which is not a time "
                        f"between {MIN_WALL_S:g} and {MAX_WALL_S:g} s since 1970; the file is damaged or forged")

    def _has_table(self, name: str) -> bool:
        return self._conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None

    def _q(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        self._deadline[0] = time.monotonic() + QUERY_TIME_LIMIT_S
        try:
            return self._conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            if "interrupted" in str(exc).lower():
                raise RecordingError(f"recording {self.path}: a query took longer than {QUERY_TIME_LIMIT_S:g} s and was "
                                     "stopped; the file is damaged, forged or too big for this machine") from None
            if "too big" in str(exc).lower():
                raise RecordingError(f"recording {self.path} holds a value larger than {MAX_VALUE_BYTES} bytes; "
                                     "the file is damaged or forged") from None
            raise RecordingError(_describe_sqlite_error(self.path, exc, False)) from None
        finally:
            self._deadline[0] = 0.0

    def _iter(self, sql: str, params: Iterable[Any] = ()) -> Iterator[tuple]:
        """Rows one at a time (for scans whose result could be large), errors as in :meth:`_q`."""
        self._deadline[0] = time.monotonic() + QUERY_TIME_LIMIT_S
        try:
            cur = self._conn.execute(sql, tuple(params))
            while True:
                rows = cur.fetchmany(1000)
                if not rows:
                    return
                yield from rows
        except sqlite3.Error as exc:
            raise RecordingError(_describe_sqlite_error(self.path, exc, False)) from None
        finally:
            self._deadline[0] = 0.0

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "RecordingReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- metadata ----

    def meta(self) -> dict[str, str]:
        """The metadata (title, notes, times...): text values, each cut at MAX_META_CHARS."""
        rows = self._q("SELECT key, substr(CAST(value AS TEXT), 1, ?) FROM meta WHERE typeof(key) = 'text' "
                       "AND length(key) <= 64 LIMIT 1000", (MAX_META_CHARS,))
        return {k: v if isinstance(v, str) else "" for k, v in rows}

    def set_meta(self, *, title: str | None = None, notes: str | None = None) -> None:
        """Edit the title and/or notes (the only editable metadata). The reader itself is
        read-only: this writes through a connection of its own, after checking the schema again
        (a trigger on ``meta`` would run on this write)."""
        conn = _connect(self.path, create=False, writable=True)
        try:
            check_schema(conn, self.path, schema_version(conn))
            with conn:
                conn.execute("BEGIN")
                for k, v in (("title", title), ("notes", notes)):
                    if v is not None:
                        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (k, v))
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise RecordingError(_describe_sqlite_error(self.path, exc, True)) from None
        finally:
            conn.close()

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
        """(n, msgpack) of the samples n_from..n_to of a node, in order. Samples of a damaged
        chunk or tail row are left out and recorded in :attr:`damage` (logged once each)."""
        if self.schema_version == 1:
            try:
                return self._bodies_v1(node.id, n_from, n_to)
            except (ValueError, zlib.error, msgspec.DecodeError) as exc:
                self._damaged(node, n_from, n_to, str(exc), key=None)
                return []
        out: list[tuple[int, bytes]] = []
        first = self._q("SELECT max(n0) FROM chunks WHERE node_id = ? AND n0 <= ?", (node.id, n_from))[0][0]
        chunks = self._q("SELECT id, n0, n1 FROM chunks WHERE node_id = ? AND n0 BETWEEN ? AND ? ORDER BY n0",
                         (node.id, n_from if first is None else first, n_to))
        for chunk_id, n0, n1 in chunks:
            if not isinstance(n0, int) or not isinstance(n1, int) or n1 < n0:
                start = n0 if isinstance(n0, int) else n_from
                self._damaged(node, start, start, "chunk has no valid sample range (its samples are unknown)", key=chunk_id)
                continue
            if n1 < n_from:
                continue
            try:
                raws = self._chunk(chunk_id)
            except (ValueError, zlib.error, msgspec.DecodeError) as exc:
                self._damaged(node, n0, n1, str(exc), key=chunk_id)
                continue
            if len(raws) != n1 - n0 + 1:
                self._damaged(node, n0, n1, f"chunk holds {len(raws)} samples for {n1 - n0 + 1} numbers", key=chunk_id)
                continue
            out += [(n0 + i, r) for i, r in enumerate(raws[max(0, n_from - n0): n_to - n0 + 1], max(0, n_from - n0))]
        # the last chunk's n1 may itself be damaged (not an integer): then the tail is read too
        if not chunks or not isinstance(chunks[-1][2], int) or chunks[-1][2] < n_to:
            for n, b in self._q("SELECT n, body FROM tail WHERE node_id = ? AND n BETWEEN ? AND ? ORDER BY n",
                                (node.id, n_from, n_to)):
                try:
                    if not isinstance(b, bytes):
                        raise ValueError(f"tail row is {type(b).__name__}, not a blob")
                    out.append((n, inflate(b, MAX_SAMPLE_BYTES)))
                except ValueError as exc:
                    self._damaged(node, n, n, str(exc), key=("tail", node.id, n))
        if len(out) > 1 and any(a[0] >= b[0] for a, b in zip(out, out[1:])):
            out = sorted(dict(out).items())  # a chunk sealed while we read: keep each n once
        return out

    def _damaged(self, node: RecordedNode, n0: int, n1: int, reason: str, key: Any) -> None:
        """Note (once per chunk or row) samples that cannot be read; the replay goes on without them."""
        if key is not None and key in self._damaged_chunks:
            return
        if key is not None:
            self._damaged_chunks.add(key)
        if len(self.damage) < MAX_GAPS_PER_NODE * 10:
            self.damage.append(Damage(node.name, n0, n1, reason))
        # info, not warning: the programs say it once, in damage_summary()
        log.info("recording %s: samples %d-%d of node %r are damaged (%s); skipped", self.path, n0, n1, node.name,
                    reason)

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
                self._check_sizes()
                self._shapes.update(self._load_shapes())
                hit = decode_chunk(body, self._shapes)
            if len(self._chunk_cache) >= CHUNK_CACHE:
                del self._chunk_cache[next(iter(self._chunk_cache))]
        self._chunk_cache[chunk_id] = hit
        return hit

    def damage_summary(self) -> str:
        """One line on what was skipped ("" when nothing was): for a warning after a replay."""
        if not self.damage and not self.damaged_rows:
            return ""
        parts = []
        if self.damage:
            by_node: dict[str, int] = {}
            for d in self.damage:
                by_node[d.node] = by_node.get(d.node, 0) + d.n1 - d.n0 + 1
            parts.append(f"skipped {len(self.damage)} damaged chunk(s) ("
                         + ", ".join(f"{k} samples of node {n!r}" for n, k in by_node.items()) + ")")
        if self.damaged_rows:
            parts.append(f"skipped {self.damaged_rows} damaged row(s) of jobs, events or inventory")
        return f"recording {self.path}: " + "; ".join(parts) + "; the rest was replayed (gaps where data is missing)"

    def _load_shapes(self) -> dict[int, Shape]:
        shapes: dict[int, Shape] = {}
        for i, t, o in self._q("SELECT id, template, slots FROM shapes"):
            # a shape whose slots point outside its template is left out: its chunks are damaged
            if isinstance(t, bytes) and isinstance(o, bytes) and len(o) % 4 == 0:
                shape = Shape.from_row(t, o)
                offs = shape.offsets
                if all(0 <= x <= len(t) - 9 and t[x] in (0xCB, 0xD3) for x in offs) and \
                        all(b - a >= 9 for a, b in zip(offs, offs[1:])):
                    shapes[i] = shape
        return shapes

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
            f"SELECT min(n), max(n), count(*) FROM samples WHERE node_id = ? AND wall_s {op} ? AND wall_s <= ?",
            (node.id, t1, t2)
        )[0]
        if row[0] is not None and row[1] - row[0] + 1 > row[2] + MAX_DISORDER:
            # in time order, the samples of a span are consecutive; here they are scattered over
            # far more samples than they are: reading them all would cost memory without end
            raise RecordingError(
                f"recording {self.path}: the samples of node {node.name!r} are out of time order (the {row[2]} "
                f"samples between {t1:.0f} and {t2:.0f} s are spread over samples {row[0]}-{row[1]}); "
                "the file is damaged or forged")
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
        return self._decode_all(self._raw_between(self._node(node), t1, t2, before))

    def _decode_all(self, raws: Iterable[bytes]) -> list[NodeSample]:
        """Decoded samples; one that cannot be decoded or whose times are not finite is left out
        (counted in :attr:`damaged_rows`): derive() must never see NaN or inf times."""
        out = []
        for raw in raws:
            try:
                s = decode_sample(raw)
            except msgspec.DecodeError:
                self.damaged_rows += 1
                continue
            if not (math.isfinite(s.wall_s) and math.isfinite(s.mono_s) and MIN_WALL_S <= s.wall_s <= MAX_WALL_S):
                self.damaged_rows += 1
                continue
            out.append(s)
        return out

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
            before = self._decode_all(self._raw_between(rn, t1, t1 - 1.0, before=1))
            prev[rn.name] = before[-1] if before else None
        lo, first = t1, True
        while lo <= t2:
            hi = min(t2, lo + window_s)
            streams = []
            for rn in rns:
                decoded = self._decode_all(self._raw_between(rn, lo, hi, lo_open=not first))
                streams.append([(s.wall_s, rn.name, s) for s in decoded])
            for _, name, s in heapq.merge(*streams, key=lambda x: (x[0], x[1])):
                yield derive(s, prev[name])
                prev[name] = s
            if hi >= t2:
                break
            # jump over stretches without samples: a recording may span years with little in it
            nxt = [self._q("SELECT min(wall_s) FROM samples WHERE node_id = ? AND wall_s > ?", (rn.id, hi))[0][0]
                   for rn in rns]
            nxt = [x for x in nxt if x is not None]
            if not nxt or min(nxt) > t2:
                break
            if min(nxt) > hi + window_s:
                lo, first = min(nxt), True  # nothing in (hi, min(nxt)): a closed window from there
            else:
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
            for s in self._decode_all(raws):
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
            jobs = [j for (b,) in self._q(
                "SELECT body FROM jobs WHERE id IN (SELECT max(id) FROM jobs WHERE node_id = ? AND wall_s >= ? "
                "AND wall_s <= ? GROUP BY job_id) ORDER BY id", (rn.id, snap_wall, t)) if (j := self._decode_row(_job_dec, b))]
            last = self._q("SELECT n FROM samples WHERE node_id = ? AND wall_s <= ? ORDER BY wall_s DESC LIMIT 1", (rn.id, t))
            older = newer = None
            if last:
                n = last[0][0]
                # a damaged chunk leaves the node without a sample here (a gap), not the replay
                pair = self._decode_all(r for _, r in self._bodies(rn, max(0, n - 1), n))
                if pair:
                    newer = pair[-1]
                    older = pair[0] if len(pair) == 2 else None
            link = self._q("SELECT state FROM links WHERE node_id = ? AND wall_s <= ? ORDER BY wall_s DESC, id DESC LIMIT 1",
                           (rn.id, t))
            out[name] = NodeState(
                node=name, inventory=self._decode_row(_inv_dec, inv_row[0][0]) if inv_row else None, jobs=jobs, older=older,
                newer=newer, link=link[0][0] if link else "", snapshot_seq=snap_seq or 0,
            )
        return out

    def _decode_row(self, decoder: msgspec.msgpack.Decoder, body: Any) -> Any:
        """A job or inventory body decoded, or None (counted) when it is damaged."""
        try:
            if not isinstance(body, bytes):
                raise msgspec.DecodeError(f"body is {type(body).__name__}")
            return decoder.decode(body)
        except msgspec.DecodeError:
            self.damaged_rows += 1
            return None

    # ---- events and gaps ----

    def events(self, t1: float | None = None, t2: float | None = None, kinds: Iterable[str] = (),
               limit: int = MAX_EVENTS, last: bool = False) -> list[Event]:
        """Events (job state changes, control actions with actor and result...) in time order:
        the first ``limit`` of them (the last ``limit`` when ``last``). Rows whose time is not
        a time, or whose fields are of the wrong type, are left out (counted)."""
        sql = ("SELECT e.wall_s, n.name, e.kind, e.message, e.job_id, e.actor, e.ok, e.data FROM events e "
               "JOIN nodes n ON n.id = e.node_id WHERE typeof(e.wall_s) IN ('real', 'integer') "
               "AND e.wall_s BETWEEN ? AND ?")
        params: list[Any] = [MIN_WALL_S if t1 is None else t1, MAX_WALL_S if t2 is None else t2]
        kinds = list(kinds)
        if kinds:
            sql += f" AND e.kind IN ({','.join('?' * len(kinds))})"
            params += kinds
        order = "DESC" if last else ""
        sql += f" ORDER BY e.wall_s {order}, e.id {order} LIMIT ?"
        params.append(max(0, min(limit, MAX_EVENTS)))
        out = []
        for w, node, k, m, j, a, ok, d in self._q(sql, params):
            try:
                if not all(isinstance(x, str) for x in (k, m)) or not all(isinstance(x, (str, type(None))) for x in (j, a, d)):
                    raise ValueError("a field of the wrong type")
                data = json.loads(d) if d else {}
                if not isinstance(data, dict):
                    raise ValueError("data is not an object")
            except ValueError:  # JSONDecodeError included
                self.damaged_rows += 1
                continue
            out.append(Event(wall_s=float(w), node=node, kind=k, message=m, job_id=j or "", actor=a or "",
                             ok=bool(ok), data=data))
        return out[::-1] if last else out

    def gaps(self, min_gap_s: float | None = None) -> list[Gap]:
        """Spans without data per node: link not live (from recorded link states), samples
        further apart than GAP_FACTOR x the node's median interval (e.g. recorder stopped), and
        samples skipped because they were damaged (only those found so far, see :attr:`damage`).
        At most MAX_GAPS_PER_NODE per node; memory stays flat whatever the file holds."""
        gaps: list[Gap] = []
        end_all = self.time_range()
        for rn in self._nodes:
            spans: list[Gap] = []
            down_since: tuple[float, str] | None = None
            seen_live = False
            for w, state in self._iter("SELECT wall_s, state FROM links WHERE node_id = ? AND typeof(wall_s) IN "
                                       "('real', 'integer') AND wall_s BETWEEN ? AND ? ORDER BY wall_s, id",
                                       (rn.id, MIN_WALL_S, MAX_WALL_S)):
                if len(spans) >= MAX_GAPS_PER_NODE:
                    break
                if state == "live":
                    if down_since is not None and seen_live:
                        spans.append(Gap(rn.name, down_since[0], w, f"link {down_since[1]}"))
                    down_since = None
                    seen_live = True
                elif state in ("stale", "down") and down_since is None and seen_live:
                    down_since = (w, state)
            if down_since is not None and end_all is not None:
                spans.append(Gap(rn.name, down_since[0], max(end_all[1], down_since[0]), f"link {down_since[1]}"))
            steps = [b - a for a, b in itertools.pairwise(
                w for (w,) in self._q("SELECT wall_s FROM samples WHERE node_id = ? ORDER BY n LIMIT ?",
                                      (rn.id, GAP_MEDIAN_STEPS + 1)))]
            if len(steps) > 1:
                typical = sorted(steps)[len(steps) // 2]
                limit = max(GAP_FACTOR * typical, min_gap_s or 0.0)
                link_spans = list(spans)
                prev = None
                for (w,) in self._iter("SELECT wall_s FROM samples WHERE node_id = ? ORDER BY n", (rn.id,)):
                    if prev is not None and w - prev > limit and \
                            not any(g.start_s < w and g.end_s > prev for g in link_spans):
                        spans.append(Gap(rn.name, prev, w, "no samples"))
                        if len(spans) >= MAX_GAPS_PER_NODE:
                            break
                    prev = w
            for d in self.damage:
                if d.node == rn.name and len(spans) < MAX_GAPS_PER_NODE:
                    walls = self._q("SELECT min(wall_s), max(wall_s) FROM samples WHERE node_id = ? AND n BETWEEN ? AND ?",
                                    (rn.id, d.n0 - 1, d.n1 + 1))[0]
                    if walls[0] is not None:
                        spans.append(Gap(rn.name, walls[0], walls[1], "damaged data"))
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
        # Every query is capped (MAX_EVENTS rows): a forged file with millions of rows in one
        # window costs a bounded amount; rows of nodes the file does not list are left out.
        items: list[tuple[float, int, str, Any]] = []
        names = {n.id: n.name for n in self._nodes}
        for rn in self._nodes:
            rows = self._q("SELECT min(n), max(n), count(*) FROM samples WHERE node_id = ? AND wall_s > ? AND wall_s <= ?",
                           (rn.id, t1, t2))[0]
            if rows[0] is None:
                continue
            if rows[1] - rows[0] + 1 > rows[2] + MAX_DISORDER:
                raise RecordingError(
                    f"recording {self.path}: the samples of node {rn.name!r} are out of time order (the {rows[2]} "
                    f"samples between {t1:.0f} and {t2:.0f} s are spread over samples {rows[0]}-{rows[1]}); "
                    "the file is damaged or forged")
            seqs = dict(self._q("SELECT n, seq FROM samples WHERE node_id = ? AND n BETWEEN ? AND ?", (rn.id, rows[0], rows[1])))
            for n, raw in self._bodies(rn, rows[0], rows[1]):
                decoded = self._decode_all((raw,))
                if not decoded:
                    continue
                s = decoded[0]
                items.append((s.wall_s, 1, rn.name, SampleMsg(node=s.node, seq=seqs.get(n) or 0, sample=s)))
        cap = (t1, t2, MAX_EVENTS)
        for node_id, w, seq, body in self._q("SELECT node_id, wall_s, seq, body FROM jobs WHERE wall_s > ? AND wall_s <= ? "
                                              "AND seq IS NOT NULL ORDER BY id LIMIT ?", cap):
            job = self._decode_row(_job_dec, body)
            if job is not None and node_id in names:
                items.append((w, 0, names[node_id], JobMsg(node=job.node, seq=seq if isinstance(seq, int) else 0, job=job)))
        for ev in self.events(t1, t2):
            if ev.wall_s > t1:
                items.append((ev.wall_s, 2, ev.node, EventMsg(node=ev.node, seq=0, event=ev)))
        for node_id, w, body in self._q("SELECT node_id, wall_s, body FROM inventory WHERE wall_s > ? AND wall_s <= ? "
                                         "LIMIT ?", cap):
            inv = self._decode_row(_inv_dec, body)
            if inv is not None and node_id in names:
                items.append((w, 0, names[node_id], InventoryMsg(node=inv.node, seq=0, inventory=inv)))
        for node_id, w, state, detail in self._q("SELECT node_id, wall_s, state, detail FROM links WHERE wall_s > ? "
                                                  "AND wall_s <= ? LIMIT ?", cap):
            if node_id in names and isinstance(state, str):
                items.append((w, 0, names[node_id], LinkChange(state, detail if isinstance(detail, str) else "")))
        for node_id, w, seq in self._q("SELECT node_id, wall_s, seq FROM snapshots WHERE wall_s > ? AND wall_s <= ? LIMIT ?",
                                       cap):
            if node_id in names:
                items.append((w, 0, names[node_id], SnapshotMark(seq if isinstance(seq, int) else 0)))
        items.sort(key=lambda x: (x[0], x[1]))
        return [(w, node, item) for w, _, node, item in items]
