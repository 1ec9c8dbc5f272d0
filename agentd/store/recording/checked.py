"""A recording opened for reading: checked, bounded queries, and its samples by number.

:class:`CheckedRecording` is the part of the reader that deals with the file: it opens it
read-only and checks it before any row is read (agentd.store.recording.files, bounds on the
counts and sizes of nodes and shapes, each node's time range), runs every query with a deadline,
and turns sample numbers into sample bodies (chunks, the open tail, schema v1 rows), skipping and
listing damaged ones. :class:`agentd.store.recording.reader.RecordingReader` adds the questions a
replay asks. Reads use raw SQL through one hardened connection: each query is bounded and checked
(see files.py), which sqlite-utils' table helpers would hide.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Self

import msgspec

from agentd.metrics.samples import NodeSample
from agentd.store.recording.files import (
    MAX_DISORDER,
    MAX_GAPS_PER_NODE,
    MAX_META_CHARS,
    MAX_NAME_CHARS,
    MAX_NODES,
    MAX_SHAPE_BYTES,
    MAX_SHAPES,
    MAX_VALUE_BYTES,
    MAX_WALL_S,
    MIN_WALL_S,
    QUERY_TIME_LIMIT_S,
    RecordingError,
    check_recording_file,
    check_schema,
    connect,
    describe_sqlite_error,
    time_limit,
)
from agentd.store.recording.views import Damage, RecordedNode
from agentd.store.recording_codec import (
    MAX_SAMPLE_BYTES,
    Shape,
    UnknownShape,
    decode_chunk,
    decode_sample,
    decode_v1_row,
    inflate,
)
from agentd.store.schema import SchemaTooNew
from agentd.store.schema_recording import RECORDING_SCHEMA, schema_version

__all__ = ["CHUNK_CACHE", "CheckedRecording"]

log = logging.getLogger(__name__)

#: Decoded chunk rows a reader keeps (each about CHUNK_ROWS x a few KiB of msgpack).
CHUNK_CACHE = 64

class CheckedRecording:
    """A recording file opened read-only and checked; every method raises RecordingError (never a
    bare sqlite3 error) when the file turns out to be damaged beyond reading. Damaged sample
    chunks found while reading are skipped and listed in :attr:`damage`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        check_recording_file(self.path)
        self._conn = connect(self.path, create=False, writable=False)
        self._deadline = time_limit(self._conn)
        #: Sample ranges skipped because they could not be decoded, in the order found.
        self.damage: list[Damage] = []
        self._damaged_chunks: set[int] = set()
        #: Rows of other tables (inventory, jobs, events) skipped because they could not be decoded.
        self.damaged_rows = 0
        try:
            try:
                version = RECORDING_SCHEMA.check(self._conn, self.path)
            except SchemaTooNew as exc:
                raise RecordingError(str(exc)) from None
            if version <= 0 or not self._has_table("samples"):
                raise RecordingError(f"{self.path} is a SQLite file but not a Fleetdeck recording")
            check_schema(self._conn, self.path, version)
            self.schema_version = version
            self._check_sizes()
            self._shapes: dict[int, Shape] = {} if version == 1 else self._load_shapes()
            self._chunk_cache: dict[int, list[bytes]] = {}
            self._nodes = [RecordedNode(*r) for r in self._q("SELECT id, key, name, endpoint FROM nodes ORDER BY id")]
            self._check_times()
        except sqlite3.Error as exc:
            self._conn.close()
            raise RecordingError(describe_sqlite_error(self.path, exc, False)) from None
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

    def _q(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
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
            raise RecordingError(describe_sqlite_error(self.path, exc, False)) from None
        finally:
            self._deadline[0] = 0.0

    def _iter(self, sql: str, params: Iterable[Any] = ()) -> Iterator[tuple[Any, ...]]:
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
            raise RecordingError(describe_sqlite_error(self.path, exc, False)) from None
        finally:
            self._deadline[0] = 0.0

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
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
        conn = connect(self.path, create=False, writable=True)
        try:
            check_schema(conn, self.path, schema_version(conn))
            with conn:
                conn.execute("BEGIN")
                for k, v in (("title", title), ("notes", notes)):
                    if v is not None:
                        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (k, v))
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise RecordingError(describe_sqlite_error(self.path, exc, True)) from None
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
                        raise TypeError(f"tail row is {type(b).__name__}, not a blob")
                    out.append((n, inflate(b, MAX_SAMPLE_BYTES)))
                except (ValueError, TypeError) as exc:
                    self._damaged(node, n, n, str(exc), key=("tail", node.id, n))
        if len(out) > 1 and any(a[0] >= b[0] for a, b in itertools.pairwise(out)):
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
                        all(b - a >= 9 for a, b in itertools.pairwise(offs)):
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

    def _decode_row(self, decoder: msgspec.msgpack.Decoder[Any], body: Any) -> Any:
        """A job or inventory body decoded, or None (counted) when it is damaged."""
        try:
            if not isinstance(body, bytes):
                raise msgspec.DecodeError(f"body is {type(body).__name__}")
            return decoder.decode(body)
        except msgspec.DecodeError:
            self.damaged_rows += 1
            return None


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

