"""Read a recording by time: :class:`RecordingReader` answers the questions replay asks.

"What was the state at time T" (inventory, job table, the two samples around T so
:func:`agentd.metrics.derive` works) and "samples of metric M for scope S between T1 and T2".
Samples are stored raw, as streamed; rates come from the same ``derive()`` as live, so replay
shows exactly what was shown live. The file handling (checks, bounded queries, sample bodies by
number) is :class:`agentd.store.recording.checked.CheckedRecording`.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from agentd.metrics.derive import derive, derive_cgroup, derive_gpu
from agentd.metrics.samples import DerivedNode, NodeInventory, NodeSample
from agentd.protocol.jobs import Event, JobInfo
from agentd.protocol.messages import EventMsg, InventoryMsg, JobMsg, SampleMsg
from agentd.store.recording.checked import CheckedRecording
from agentd.store.recording.files import (
    GAP_MEDIAN_STEPS,
    MAX_DISORDER,
    MAX_EVENTS,
    MAX_GAPS_PER_NODE,
    MAX_WALL_S,
    MIN_WALL_S,
    RecordingError,
)
from agentd.store.recording.views import (
    SQL_COLUMNS,
    Gap,
    GpuView,
    JobView,
    LinkChange,
    RecordedNodeState,
    RecordingInfo,
    SnapshotMark,
    gpu_view_dec,
    job_view_dec,
    pair_interval,
)

__all__ = ["RecordingReader"]

#: Samples further apart than this many times the node's usual interval count as a gap.
GAP_FACTOR = 3.0
#: A replay opens once the nodes recorded from the start (joined within this many s) are known.
OPENING_SETTLE_S = 10.0

_inv_dec = msgspec.msgpack.Decoder(NodeInventory)
_job_dec = msgspec.msgpack.Decoder(JobInfo)


class RecordingReader(CheckedRecording):
    """Read a recording by time. Opening checks the file; every method raises RecordingError
    (never a bare sqlite3 error) when the file turns out to be damaged beyond reading.

    The file is opened read-only (only :meth:`set_meta` writes, on a connection of its own) and checked
    before any row is read: :func:`check_recording_file`, :func:`check_schema`, bounds on the
    counts and sizes of nodes and shapes, and each node's time range. Damaged sample chunks
    found while reading are skipped and listed in :attr:`damage` (and in :meth:`gaps`)."""

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
            prev_g: GpuView | None = None
            for r in raws:
                g = gpu_view_dec.decode(r)
                if g.wall_s >= t1:
                    interval = pair_interval(g, prev_g)
                    new = next((x for x in g.gpus if x.index == index), None)
                    old = next((x for x in prev_g.gpus if x.index == index), None) if interval > 0 and prev_g else None
                    if new is not None:
                        out.append((g.wall_s, getattr(derive_gpu(new, old, interval), metric)))
                prev_g = g
            return out
        if kind == "job":
            prev_j: JobView | None = None
            for r in raws:
                j = job_view_dec.decode(r)
                if j.wall_s >= t1:
                    interval = pair_interval(j, prev_j)
                    new_c = next((x for x in j.jobs if x.job_id == ident), None)
                    old_j = prev_j if interval > 0 else None  # pair_interval is 0 without prev_j
                    old_c = next((x for x in old_j.jobs if x.job_id == ident), None) if old_j is not None else None
                    if new_c is not None:
                        d = derive_cgroup(new_c, old_c, interval, [m for m in j.app if m.job_id == ident],
                                          [m for m in old_j.app if m.job_id == ident] if old_j is not None else [])
                        value = d.app.get(metric[4:]) if metric.startswith("app.") else getattr(d, metric)
                        out.append((j.wall_s, value))
                prev_j = j
            return out
        raise RecordingError(f"unknown scope {scope!r}; use '', 'gpu:N' or 'job:ID'")
    # ---- state at T ----

    def state_at(self, t: float, node: str | None = None) -> dict[str, RecordedNodeState]:
        """State of every node (or one) at wall time ``t``: inventory, jobs, last two samples, link."""
        names = [node] if node else self.nodes()
        out: dict[str, RecordedNodeState] = {}
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
            out[name] = RecordedNodeState(
                node=name, inventory=self._decode_row(_inv_dec, inv_row[0][0]) if inv_row else None, jobs=jobs, older=older,
                newer=newer, link=link[0][0] if link else "", snapshot_seq=snap_seq or 0,
            )
        return out
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
                    raise TypeError("data is not an object")
            except (ValueError, TypeError):  # JSONDecodeError included
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
