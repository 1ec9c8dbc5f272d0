"""The quantile band of a chart over many series ("all GPUs / nodes / jobs"), kept incrementally.

No Qt here. Recomputing the band from every ring cost ~100 ms of the GUI thread at 1,000 nodes
(a read, bin and reduce of each node's whole window, every second). Here each series keeps,
per time bin, the sum and count of its points; bins are aligned to absolute time (multiples of
the bin width), so a bin that has passed never changes: an update reads and bins only the
points that arrived since the last one, and re-sorts (for min/p50/p95/max) only the bins those
points touched. A full recompute is the same code from an empty cache.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from gui.series import RATE_WINDOW_S, NodeSeries, SeriesKey, SeriesStore, smooth_rate_rows

BAND_BINS = 150
BAND_TOP_K = 5
QUANTILES = (("max", 1.0), ("p95", 0.95), ("p50", 0.5), ("min", 0.0))


def bin_width(span_s: float, t0: float, t1: float, bins: int = BAND_BINS) -> float:
    """The band's bin width: ``span_s / bins`` times a power of two, the largest not over
    ``(t1 - t0) / bins``. A window then shows bins..2*bins bins, and the width (which empties
    the cache) changes only when a young session's window doubles, not every second."""
    base = span_s / bins
    want = (t1 - t0) / bins
    if not (want > 0 and base > 0):
        return base if base > 0 else 1.0
    return base * 2.0 ** math.floor(math.log2(want / base) + 1e-9)


@dataclass
class Band:
    """min/p50/p95/max per bin that has data (``t``: bin centres) and the top-k series by
    their mean over the window, with their binned means."""

    t: np.ndarray
    lines: dict[str, np.ndarray]
    top: list[tuple[SeriesKey, np.ndarray]]
    n_series: int


FAST_MAX = 8  # new points per node up to which they are read one by one (else by window)
REBASE_EVERY = 256  # running window sums are re-added from scratch this often (float drift)


@dataclass
class _Window:
    """A node's trailing RATE_WINDOW_S of raw points, with each series' sums of value x dt and
    of dt over its finite points: the window mean of one new point in O(keys), the same
    definition as :func:`gui.series.smooth_rate_rows` (which builds it for a whole window)."""

    t_prev: float
    points: deque[tuple[float, float, list[float]]]  # (t, dt, value per key), oldest first
    s: list[float]
    w: list[float]
    adds: int = 0

    @classmethod
    def from_rows(cls, t: np.ndarray, rows: np.ndarray) -> _Window:
        """From a read of raw points (times ``t``, ``rows`` keys x points) that begins at least
        a window before its last point, or at the ring's first point."""
        n = t.size
        dt = np.empty(n)
        if n:
            dt[1:] = np.diff(t)
            dt[0] = dt[1] if n > 1 else 1.0
        np.clip(dt, 0.0, RATE_WINDOW_S, out=dt)
        inside = t > t[-1] - RATE_WINDOW_S if n else np.zeros(0, dtype=bool)
        win = cls(float(t[-1]) if n else -math.inf, deque(), [0.0] * rows.shape[0], [0.0] * rows.shape[0])
        vals = rows[:, inside].astype(np.float64).T.tolist()
        for tj, dj, vj in zip(t[inside].tolist(), dt[inside].tolist(), vals):
            win.points.append((tj, dj, vj))
        win._rebase()
        return win

    def _rebase(self) -> None:
        k = len(self.s)
        self.s, self.w = [0.0] * k, [0.0] * k
        for _t, dt, vals in self.points:
            for r, v in enumerate(vals):
                if v == v:  # finite (values are never inf)
                    self.s[r] += v * dt
                    self.w[r] += dt
        self.adds = 0

    def add(self, t: float, vals: list[float]) -> list[float]:
        """Take the next point; return each series' mean over the window that ends at it
        (NaN where the point's own value is NaN or nothing finite is in the window)."""
        dt = min(max(t - self.t_prev, 0.0), RATE_WINDOW_S) if self.t_prev > -math.inf else 1.0
        self.t_prev = t
        self.points.append((t, dt, vals))
        for r, v in enumerate(vals):
            if v == v:
                self.s[r] += v * dt
                self.w[r] += dt
        while self.points[0][0] <= t - RATE_WINDOW_S:
            _t, odt, ovals = self.points.popleft()
            for r, v in enumerate(ovals):
                if v == v:
                    self.s[r] -= v * odt
                    self.w[r] -= odt
        self.adds += 1
        if self.adds >= REBASE_EVERY:
            self._rebase()
        return [self.s[r] / self.w[r] if v == v and self.w[r] > 0 else math.nan for r, v in enumerate(vals)]


@dataclass
class _Node:
    ns: NodeSeries | None  # None: no ring yet (binned once it has one)
    keys: list[tuple[str, str]]
    rows: np.ndarray  # this node's rows in the cache's matrices
    done_t: float = -math.inf  # time of the last point binned
    window: _Window | None = None  # a rate's running window (smoothed bands only)
    _arrays: list[np.ndarray | None] = field(default_factory=list)
    _arrays_cap: int = 0
    _bases: list[int] = field(default_factory=list)

    def arrays(self) -> list[np.ndarray | None]:
        """The node's value rings for its keys, looked up again only when they can have
        changed: the ring grew (new arrays) or a metric had not appeared yet."""
        ns = self.ns
        assert ns is not None  # only asked for a node with a ring
        if self._arrays_cap != ns.capacity or not self._arrays or any(a is None for a in self._arrays):
            self._arrays = [ns.values.get(k) for k in self.keys]
            self._arrays_cap = ns.capacity
        return self._arrays

    def bases(self, cols: int) -> list[int]:
        """Flat offsets of this node's rows in the cache's (rows x cols) matrices."""
        if len(self._bases) != len(self.keys):
            self._bases = (self.rows * cols).tolist()
        return self._bases


@dataclass
class BandCache:
    """Per-series bin sums of one chart's band (one metric). :meth:`update` returns the band
    of the window [t0, t1] and counts in ``binned_points`` the points it binned."""

    smoothed: bool = False  # a rate: the band is over its RATE_WINDOW_S window means
    bins: int = BAND_BINS
    width: float = 0.0
    keys: list[SeriesKey] = field(default_factory=list)
    nodes: dict[str, _Node] = field(default_factory=dict)
    lo_bin: int = 0  # first bin whose sums are complete
    hi_bin: int = -1  # last bin held
    binned_points: int = 0

    def __post_init__(self) -> None:
        self.cols = 2 * self.bins + 4  # a ring of bins: a window spans at most 2*bins + 1
        # Bin means (0 where none) and whether a series has data in the bin, for the bins whose
        # quantiles are held: the top-k scores are two sums over them, no division per update.
        self._empty()
        self.q = np.full((len(QUANTILES), self.cols), np.nan)  # quantiles per held bin
        self.q_n = np.zeros(self.cols, dtype=np.int64)  # series with data per held bin
        self.q_bin = np.full(self.cols, -1, dtype=np.int64)  # the bin whose quantiles are held
        self._key_rows: list[SeriesKey | None] = []  # the key of each matrix row (None: free)
        self._free_rows: list[int] = []

    def _empty(self) -> None:
        # Small types: 8,000 GPUs x 304 bins is 2.4 M cells a matrix. Counts fit 16 bits: a
        # bin never holds more points than a ring does (3,600 for the app's hour).
        self.sums = np.zeros((0, self.cols), dtype=np.float32)
        self.counts = np.zeros((0, self.cols), dtype=np.uint16)
        self.mz = np.zeros((0, self.cols), dtype=np.float32)
        self.mf = np.zeros((0, self.cols), dtype=np.uint8)

    def _reset(self, width: float, b0: int, b1: int) -> None:
        self.width, self.keys, self.nodes = width, [], {}
        self._key_rows, self._free_rows = [], []
        self.lo_bin, self.hi_bin = b0, b1
        self._empty()
        self.q_bin[:] = -1

    def update(self, store: SeriesStore, keys: list[SeriesKey], t0: float, t1: float, width: float) -> Band:
        b0, b1 = math.floor(t0 / width), math.floor(t1 / width)
        if b1 - b0 + 1 > self.cols:  # a window wider than the ring (never with bin_width)
            b0 = b1 - self.cols + 1
        if width != self.width or b0 < max(self.lo_bin, b1 - self.cols + 1) or b1 < self.hi_bin:
            self._reset(width, b0, b1)  # another width, or a window the cache never saw
        if keys != self.keys:
            self._relayout(store, keys)
        if b1 > self.hi_bin:  # the window moved on: empty the ring columns of the new bins
            new = np.arange(max(self.hi_bin + 1, b1 - self.cols + 1), b1 + 1) % self.cols
            self.sums[:, new] = 0
            self.counts[:, new] = 0
            self.q_bin[new] = -1
            self.hi_bin = b1
            self.lo_bin = max(self.lo_bin, b1 - self.cols + 1)
        self._bin_new(store)
        return self._band(b0, b1)

    def _relayout(self, store: SeriesStore, keys: list[SeriesKey]) -> None:
        """New key list (jobs come and go every second at 1,000 nodes): nodes whose keys and
        ring are unchanged keep their rows untouched; a changed node's old rows are emptied
        and freed, its keys get free rows and are binned from the window start at the next
        :meth:`_bin_new`; the matrices grow by doubling. Rows are in no particular order."""
        per_node: dict[str, list[tuple[str, str]]] = {}
        for k in keys:
            per_node.setdefault(k[0], []).append((k[1], k[2]))
        for node in [n for n in self.nodes if n not in per_node]:
            self._free(self.nodes.pop(node).rows)
        for node, nkeys in per_node.items():
            old = self.nodes.get(node)
            ns = store.nodes.get(node)
            if old is not None and old.keys == nkeys and old.ns is ns:
                continue
            if old is not None:
                self._free(old.rows)
            rows = self._take(len(nkeys))
            for r, (sc, m) in zip(rows.tolist(), nkeys):
                self._key_rows[r] = (node, sc, m)
            self.nodes[node] = _Node(ns, nkeys, rows)
        self.keys = list(keys)
        self.q_bin[:] = -1  # every bin's quantiles are over another set of series now

    def _free(self, rows: np.ndarray) -> None:
        for mat in (self.sums, self.counts, self.mz, self.mf):
            mat[rows] = 0
        for r in rows.tolist():
            self._key_rows[r] = None
        self._free_rows.extend(rows.tolist())

    def _take(self, n: int) -> np.ndarray:
        if len(self._free_rows) < n:
            have = self.sums.shape[0]
            grow = max(n - len(self._free_rows), have, 64)  # double: amortised copies
            self.sums, self.counts, self.mz, self.mf = (np.vstack((m, np.zeros((grow, self.cols), dtype=m.dtype)))
                                                        for m in (self.sums, self.counts, self.mz, self.mf))
            self._key_rows.extend([None] * grow)
            self._free_rows.extend(range(have, have + grow))
        self._free_rows.sort(reverse=True)  # lowest rows first: the matrices stay dense
        taken = [self._free_rows.pop() for _ in range(n)]
        return np.array(taken, dtype=np.int64)

    def _bin_new(self, store: SeriesStore) -> None:
        """Add every point not binned yet (after the node's ``done_t``, inside the held bins).
        A node with a few new points (every second, through a relay) is read point by point:
        a window read per node is ~20 numpy calls, 1,000 nodes' worth is the ~100 ms this saves."""
        w, cols = self.width, self.cols
        lo_t, hi_t = self.lo_bin * w, (self.hi_bin + 1) * w
        flat: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        one_idx: list[int] = []
        one_val: list[float] = []
        self.binned_points = 0
        for node, nd in self.nodes.items():
            ns = store.nodes.get(node)
            if ns is None or ns.count == 0:
                continue
            if ns is not nd.ns:  # the ring was replaced (the node left and came back): rebin it
                nd.ns, nd.done_t, nd.window, nd._arrays = ns, -math.inf, None, []
                self.sums[nd.rows] = 0
                self.counts[nd.rows] = 0
                self.q_bin[:] = -1
            new = self._new_indices(nd, ns)
            if new is None:
                got = self._read_window(nd, ns, lo_t, hi_t)
                if got is not None:
                    t, rows = got
                    tcols = np.floor(t / w).astype(np.int64) % cols
                    flat.append((nd.rows[:, None] * cols + tcols[None, :]).ravel())
                    vals.append(rows.ravel())
                    self.binned_points += t.size
                continue
            arrs = nd.arrays()
            bases = nd.bases(cols)
            for i in new:
                t1 = float(ns.times[i])
                if t1 >= hi_t:
                    break  # past the window (a paused view): binned once the window gets there
                if nd.window is not None:
                    v = nd.window.add(t1, [math.nan if a is None else float(a[i]) for a in arrs])
                else:
                    v = [math.nan if a is None else float(a[i]) for a in arrs]
                nd.done_t = t1
                if t1 < lo_t:
                    continue
                c = math.floor(t1 / w) % cols
                for base, x in zip(bases, v):
                    if x == x:  # not NaN
                        one_idx.append(base + c)
                        one_val.append(x)
                self.binned_points += 1
        if one_idx:
            flat.append(np.array(one_idx, dtype=np.int64))
            vals.append(np.array(one_val))
        if not flat:
            return
        idx, allv = np.concatenate(flat), np.concatenate(vals)
        fin = np.isfinite(allv)
        idx, allv = idx[fin], allv[fin]
        np.add.at(self.sums.reshape(-1), idx, allv)
        np.add.at(self.counts.reshape(-1), idx, 1)
        self.q_bin[np.unique(idx % cols)] = -1  # those bins' quantiles are stale

    def _new_indices(self, nd: _Node, ns: NodeSeries) -> list[int] | None:
        """Ring rows newer than ``nd.done_t``, oldest first, when they are few and the node was
        read before; None: read by window."""
        if nd.done_t == -math.inf or (self.smoothed and nd.window is None):
            return None
        out: list[int] = []
        cap, times = ns.capacity, ns.times
        for back in range(1, min(ns.count, FAST_MAX + 1) + 1):
            i = (ns.head - back) % cap
            if times[i] <= nd.done_t:
                out.reverse()
                return out
            out.append(i)
        return None  # many new points, or every point in the ring is new

    def _read_window(self, nd: _Node, ns: NodeSeries, lo_t: float, hi_t: float) -> tuple[np.ndarray, np.ndarray] | None:
        """The node's points after ``done_t`` in [lo_t, hi_t) (window means for a rate), read
        in one go; sets ``done_t`` (and the rate's running window)."""
        start = max(nd.done_t, lo_t)
        if self.smoothed:  # read a window's worth before, so the new points' means are whole
            t, raw = ns.get_rows(nd.keys, start - RATE_WINDOW_S, hi_t)
            cut = t < hi_t
            t, raw = t[cut], raw[:, cut]
            rows = smooth_rate_rows(t, raw)
            nd.window = _Window.from_rows(t, raw) if t.size else None
        else:
            t, rows = ns.get_rows(nd.keys, start, hi_t)
        keep = (t > nd.done_t) & (t >= lo_t) & (t < hi_t)
        if t.size:
            nd.done_t = max(nd.done_t, float(t[t < hi_t][-1])) if (t < hi_t).any() else nd.done_t
        if not keep.any():
            return None
        return t[keep], np.asarray(rows[:, keep], dtype=np.float64)

    def _band(self, b0: int, b1: int) -> Band:
        bins = np.arange(b0, b1 + 1)
        cols = bins % self.cols
        mask = self.q_bin[cols] != bins
        stale = cols[mask]
        if stale.size and self.sums.shape[0]:
            with np.errstate(invalid="ignore", divide="ignore"):
                means = self.sums[:, stale] / self.counts[:, stale]  # 0/0: NaN, no data
            fin = np.isfinite(means)
            self.mz[:, stale] = np.where(fin, means, 0.0)
            self.mf[:, stale] = fin
            m = np.sort(means, axis=0)  # each bin's values in order, NaNs last
            n = fin.sum(axis=0)
            for j, (_name, q) in enumerate(QUANTILES):
                idx = np.floor(q * np.maximum(n - 1, 0)).astype(np.int64)
                self.q[j, stale] = np.where(n > 0, m[idx, np.arange(stale.size)], np.nan)
            self.q_n[stale] = n
        elif stale.size:
            self.q_n[stale] = 0
        self.q_bin[stale] = bins[mask]
        has = self.q_n[cols] > 0
        t = (bins[has] + 0.5) * self.width
        lines = {name: self.q[j, cols[has]].astype(np.float64) for j, (name, _q) in enumerate(QUANTILES)}
        top: list[tuple[SeriesKey, np.ndarray]] = []
        if self.sums.shape[0] and has.any():
            # The window is one or two runs of ring columns: sum them as slices (no copy).
            c0, c1 = int(cols[0]), int(cols[-1])
            runs = [(c0, c1 + 1)] if c0 <= c1 else [(c0, self.cols), (0, c1 + 1)]
            total = sum(self.mz[:, a:b].sum(axis=1, dtype=np.float64) for a, b in runs)
            nfin = sum(self.mf[:, a:b].sum(axis=1, dtype=np.float64) for a, b in runs)
            score = np.where(nfin > 0, total / np.maximum(nfin, 1), -np.inf)
            hc = cols[has]
            for i in np.argsort(-score, kind="stable")[:BAND_TOP_K]:
                key = self._key_rows[int(i)]
                if np.isfinite(score[i]) and key is not None:
                    v = np.where(self.mf[i, hc] > 0, self.mz[i, hc], np.nan).astype(np.float64)
                    top.append((key, v))
        return Band(t, lines, top, sum(len(nd.keys) for nd in self.nodes.values() if nd.ns is not None))
