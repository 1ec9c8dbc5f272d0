"""Numpy ring buffers for the charts, and min/max decimation to the pixel width.

No Qt here. A :class:`NodeSeries` keeps one time ring per node and one float32 value ring
per metric, all sharing the node's write position: every metric of a node arrives in the same
sample, so a shared time axis costs 4 bytes per point instead of 12. A metric that appears
later (a new job) is NaN before it appeared, and charts draw NaN as a gap.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

DEFAULT_HISTORY_S = 3600.0
DEFAULT_INTERVAL_S = 1.0
# A node known only by relay summaries keeps this much (1,000 nodes x 34 metrics x 1 h of
# float32 is ~500 MiB; 15 min, the charts' default span, is a quarter of it). Once the node is
# followed (full samples), its ring grows to the full history and keeps what it had.
DEFAULT_SUMMARY_HISTORY_S = 900.0
COLUMN_LOOP_MAX = 64  # points per bin up to which decimation steps over columns (see decimate_minmax_rows)

# A series is named (node key, scope, metric): scope "" is the node itself, "gpu3" a GPU,
# anything else a job id.
SeriesKey = tuple[str, str, str]


class NodeSeries:
    """Ring buffers of one node: ``capacity`` rows of (time, value per metric)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 2:
            raise ValueError(f"ring capacity {capacity} is too small; use at least 2 points")
        self.capacity = capacity
        self.times = np.full(capacity, np.nan, dtype=np.float64)
        self.values: dict[tuple[str, str], np.ndarray] = {}
        self.head = 0  # next row to write
        self.count = 0

    def append(self, t: float, values: dict[tuple[str, str], float | None]) -> None:
        """Add one row at wall time ``t``; metrics missing from ``values`` get NaN."""
        row = self.head
        self.times[row] = t
        for key, arr in self.values.items():
            v = values.get(key)
            arr[row] = np.nan if v is None else v
        for key, v in values.items():
            if key not in self.values and v is not None:
                arr = np.full(self.capacity, np.nan, dtype=np.float32)
                arr[row] = v
                self.values[key] = arr
        self.head = (row + 1) % self.capacity
        self.count = min(self.count + 1, self.capacity)

    def grow(self, capacity: int) -> None:
        """Make the ring hold ``capacity`` rows, keeping every row it holds (oldest first)."""
        if capacity <= self.capacity:
            return
        n = self.count
        times = np.full(capacity, np.nan, dtype=np.float64)
        times[:n] = self._order(self.times)
        values = {}
        for key, arr in self.values.items():
            new = np.full(capacity, np.nan, dtype=np.float32)
            new[:n] = self._order(arr)
            values[key] = new
        self.times, self.values, self.capacity = times, values, capacity
        self.head = n % capacity

    def _order(self, arr: np.ndarray) -> np.ndarray:
        if self.count < self.capacity:
            return arr[: self.count]
        return np.concatenate((arr[self.head:], arr[: self.head]))

    def get(self, scope: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(times, values) oldest first; empty arrays for an unknown metric."""
        arr = self.values.get((scope, metric))
        if arr is None or self.count == 0:
            return np.empty(0), np.empty(0, dtype=np.float32)
        return self._order(self.times), self._order(arr)

    def get_rows(self, keys: list[tuple[str, str]], t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
        """(times, values as len(keys) x points) of the window [t0, t1] (as :func:`window`
        cuts it) for several metrics at once: one time lookup and one gather for all of them.
        An unknown metric is a row of NaN."""
        if self.count == 0:
            return np.empty(0), np.empty((len(keys), 0), dtype=np.float32)
        start = self.head if self.count == self.capacity else 0
        times = self._order(self.times)
        i0, i1 = window_bounds(times, t0, t1)
        rows = np.full((len(keys), i1 - i0), np.nan, dtype=np.float32)
        a, b = start + i0, start + i1
        if b <= self.capacity:  # the window does not wrap around the ring: plain slices
            for j, key in enumerate(keys):
                arr = self.values.get(key)
                if arr is not None:
                    rows[j] = arr[a:b]
        else:
            idx = np.arange(a, b) % self.capacity
            for j, key in enumerate(keys):
                arr = self.values.get(key)
                if arr is not None:
                    np.take(arr, idx, out=rows[j])
        return times[i0:i1], rows

    def last(self, scope: str, metric: str) -> float | None:
        arr = self.values.get((scope, metric))
        if arr is None or self.count == 0:
            return None
        v = float(arr[(self.head - 1) % self.capacity])
        return None if math.isnan(v) else v

    def first_time(self) -> float | None:
        """Wall time of the oldest row still held."""
        if self.count == 0:
            return None
        return float(self.times[self.head if self.count == self.capacity else 0])

    def drop_scope(self, scope: str) -> None:
        """Forget every metric of one scope (a job that is gone)."""
        for key in [k for k in self.values if k[0] == scope]:
            del self.values[key]


class SeriesStore:
    """Every node's rings. ``history_s`` / ``interval_s`` decide the ring size; a node fed
    only summaries (``summary=True``) gets ``summary_history_s`` until a full sample comes."""

    def __init__(self, history_s: float = DEFAULT_HISTORY_S, interval_s: float = DEFAULT_INTERVAL_S,
                 summary_history_s: float = DEFAULT_SUMMARY_HISTORY_S) -> None:
        self.history_s = history_s
        self.capacity = max(2, math.ceil(history_s / interval_s))
        self.summary_capacity = min(self.capacity, max(2, math.ceil(summary_history_s / interval_s)))
        self.nodes: dict[str, NodeSeries] = {}

    def node(self, key: str, summary: bool = False) -> NodeSeries:
        ns = self.nodes.get(key)
        if ns is None:
            ns = self.nodes[key] = NodeSeries(self.summary_capacity if summary else self.capacity)
        elif not summary and ns.capacity < self.capacity:
            ns.grow(self.capacity)  # followed now: the full history from here on
        return ns

    def append(self, key: str, t: float, values: dict[tuple[str, str], float | None], summary: bool = False) -> None:
        self.node(key, summary).append(t, values)

    def get(self, key: SeriesKey) -> tuple[np.ndarray, np.ndarray]:
        ns = self.nodes.get(key[0])
        if ns is None:
            return np.empty(0), np.empty(0, dtype=np.float32)
        return ns.get(key[1], key[2])

    def last(self, key: SeriesKey) -> float | None:
        ns = self.nodes.get(key[0])
        return None if ns is None else ns.last(key[1], key[2])

    def keys(self) -> Iterator[SeriesKey]:
        for node, ns in self.nodes.items():
            for scope, metric in ns.values:
                yield (node, scope, metric)

    def drop_node(self, key: str) -> None:
        self.nodes.pop(key, None)

    def clear(self) -> None:
        self.nodes.clear()


def window(t: np.ndarray, v: np.ndarray, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
    """The part of a series between ``t0`` and ``t1``, plus one point either side so the
    line reaches the edges of the view. ``t`` must be sorted."""
    if t.size == 0:
        return t, v
    i0 = max(0, int(np.searchsorted(t, t0, side="left")) - 1)
    i1 = min(t.size, int(np.searchsorted(t, t1, side="right")) + 1)
    return t[i0:i1], v[i0:i1]


def decimate_minmax(t: np.ndarray, v: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Reduce a series to about ``2 * n_bins`` points: each bin's min at its first time and
    its max at its last time (the envelope a pixel column shows).

    Spikes survive; a bin that is all NaN stays NaN, so gaps survive. Series already small
    enough come back unchanged. Two NaN-ignoring reductions per call: cheap enough to run on
    every curve at every frame.
    """
    n = t.size
    if n_bins < 1 or n <= 2 * n_bins:
        return t, v
    per = n // n_bins
    m = per * n_bins
    vb = v[:m].reshape(n_bins, per)
    tb = t[:m].reshape(n_bins, per)
    tail = n - m
    out_t = np.empty(2 * n_bins + tail, dtype=np.float64)
    out_v = np.empty(2 * n_bins + tail, dtype=np.float64)
    out_t[0 : 2 * n_bins : 2] = tb[:, 0]
    out_t[1 : 2 * n_bins : 2] = tb[:, -1]
    out_v[0 : 2 * n_bins : 2] = np.fmin.reduce(vb, axis=1)
    out_v[1 : 2 * n_bins : 2] = np.fmax.reduce(vb, axis=1)
    if tail:
        out_t[2 * n_bins :] = t[m:]
        out_v[2 * n_bins :] = v[m:]
    return out_t, out_v


def window_bounds(t: np.ndarray, t0: float, t1: float) -> tuple[int, int]:
    """Index range [i0, i1) that :func:`window` would cut from ``t``."""
    if t.size == 0:
        return 0, 0
    i0 = max(0, int(np.searchsorted(t, t0, side="left")) - 1)
    i1 = min(t.size, int(np.searchsorted(t, t1, side="right")) + 1)
    return i0, i1


def decimate_minmax_rows(t: np.ndarray, rows: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decimate_minmax` of several series sharing one time axis (``rows`` is
    series x points), in one reduction over all of them: a node's GPUs share its time ring."""
    n = t.size
    if n_bins < 1 or n <= 2 * n_bins:
        return t, rows
    k = rows.shape[0]
    per = n // n_bins
    m = per * n_bins
    tail = n - m
    out_t = np.empty(2 * n_bins + tail, dtype=np.float64)
    tb = t[:m].reshape(n_bins, per)
    out_t[0 : 2 * n_bins : 2] = tb[:, 0]
    out_t[1 : 2 * n_bins : 2] = tb[:, -1]
    vb = rows[:, :m].reshape(k, n_bins, per)
    # fmin/fmax over the bin's columns, one vectorised step per column: several times faster
    # than a reduction along the short last axis. They ignore NaN, so an all-NaN bin stays NaN
    # (a gap) and others keep their values.
    if per <= COLUMN_LOOP_MAX:
        lo = vb[:, :, 0].astype(np.float64)
        hi = lo.copy()
        for j in range(1, per):
            col = vb[:, :, j]
            np.fmin(lo, col, out=lo)
            np.fmax(hi, col, out=hi)
    else:  # long bins (a long history on a narrow plot): the reduction is the cheaper one
        lo, hi = np.fmin.reduce(vb, axis=2), np.fmax.reduce(vb, axis=2)
    out_v = np.empty((k, 2 * n_bins + tail), dtype=np.float64)
    out_v[:, 0 : 2 * n_bins : 2] = lo
    out_v[:, 1 : 2 * n_bins : 2] = hi
    if tail:
        out_t[2 * n_bins :] = t[m:]
        out_v[:, 2 * n_bins :] = rows[:, m:]
    return out_t, out_v


RATE_WINDOW_S = 30.0  # bursty agents: a rate is shown as its mean over this window


def smooth_rate_rows(t: np.ndarray, rows: np.ndarray, window_s: float = RATE_WINDOW_S) -> np.ndarray:
    """Each point of each row (series x points, sharing times ``t``) replaced by the
    time-weighted mean of that row over the trailing ``window_s`` seconds.

    A per-interval rate of a bursty counter is 0 between bursts; its mean over a window is
    what a person means by "its rate". Each sample covers the interval since the previous
    one, so for a counter the mean is exactly (change over the window) / (time it covers).
    NaN stays NaN (the job was not there: a gap, not a zero) and does not count in the mean.
    This is the one smoothing: the jobs table (:meth:`NodeSeries.smoothed_last`) and the
    charts both call it, so they agree.
    """
    n = t.size
    if n == 0:
        return rows.astype(np.float64)
    dt = np.empty(n, dtype=np.float64)
    dt[1:] = np.diff(t)
    dt[0] = dt[1] if n > 1 else 1.0
    np.clip(dt, 0.0, window_s, out=dt)  # a long pause in samples weighs no more than the window
    finite = np.isfinite(rows)
    w = np.where(finite, dt, 0.0)
    s = np.where(finite, np.nan_to_num(rows.astype(np.float64)) * dt, 0.0)
    k = rows.shape[0]
    cw = np.zeros((k, n + 1))
    cs = np.zeros((k, n + 1))
    np.cumsum(w, axis=1, out=cw[:, 1:])
    np.cumsum(s, axis=1, out=cs[:, 1:])
    first = np.searchsorted(t, t - window_s, side="right")  # first sample inside (t_i - W, t_i]
    last = np.arange(1, n + 1)
    den = cw[:, last] - cw[:, first]
    num = cs[:, last] - cs[:, first]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[~finite | (den <= 0)] = np.nan
    return out


def smoothed_last(ns: NodeSeries, scope: str, metric: str, window_s: float = RATE_WINDOW_S) -> float | None:
    """The latest point of :func:`smooth_rate_rows` for one metric of a node (None: no value now)."""
    if ns.count == 0 or (scope, metric) not in ns.values:
        return None
    t_last = float(ns.times[(ns.head - 1) % ns.capacity])
    t, rows = ns.get_rows([(scope, metric)], t_last - window_s - 1e-9, t_last)
    if t.size == 0:
        return None
    v = float(smooth_rate_rows(t, rows, window_s)[0, -1])
    return None if math.isnan(v) else v
