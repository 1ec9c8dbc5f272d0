"""The chart band kept incrementally (gui/band.py) equals a full recompute, bins only new points,
and agrees with a plain reference computation on random data. Pure: no Qt."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gui.band import BAND_BINS, QUANTILES, BandCache, bin_width
from gui.series import SeriesKey, SeriesStore, smooth_rate_rows

SPAN = 300.0
T_START = 1_000_000.0


def _feed(store: SeriesStore, rng: np.random.Generator, nodes: int, t_from: float, t_to: float) -> int:
    """Samples every ~1 s (jittered per node) with random values, some NaN; returns points fed."""
    fed = 0
    for n in range(nodes):
        t = t_from + rng.uniform(0, 1)
        while t < t_to:
            vals = {(f"gpu{i}", "util"): (None if rng.random() < 0.05 else float(rng.uniform(0, 100))) for i in range(4)}
            store.append(f"n{n}", t, vals)
            fed += 1
            t += rng.uniform(0.5, 1.5)
    return fed


def _keys(store: SeriesStore) -> list[SeriesKey]:
    return [(node, f"gpu{i}", "util") for node in store.nodes for i in range(4)]


def _reference(store: SeriesStore, keys: list[SeriesKey], t0: float, t1: float, w: float, smoothed: bool) -> dict[str, np.ndarray]:
    """The band the plain way: every point of every ring, binned by floor(t / w), per bin the
    quantiles of the series' bin means."""
    b0, b1 = math.floor(t0 / w), math.floor(t1 / w)
    means = np.full((len(keys), b1 - b0 + 1), np.nan)
    for r, (node, scope, metric) in enumerate(keys):
        t, v = store.nodes[node].get(scope, metric)
        v = v.astype(np.float64)
        if smoothed:
            v = smooth_rate_rows(t, v[None, :])[0]
        b = np.floor(t / w).astype(np.int64)
        for j in range(b1 - b0 + 1):
            sel = v[(b == b0 + j) & np.isfinite(v)]
            if sel.size:
                means[r, j] = sel.mean()
    out = {}
    for name, q in QUANTILES:
        col = []
        for j in range(means.shape[1]):
            fin = np.sort(means[np.isfinite(means[:, j]), j])
            col.append(fin[math.floor(q * (fin.size - 1))] if fin.size else np.nan)
        out[name] = np.array(col)[np.isfinite(np.array(col))]
    return out


@pytest.mark.parametrize("smoothed", [False, True])
def test_incremental_band_equals_a_full_recompute_and_bins_only_new_points(smoothed):
    rng = np.random.default_rng(7)
    store = SeriesStore(history_s=600, interval_s=1.0)
    _feed(store, rng, 40, T_START, T_START + 200)
    cache = BandCache(smoothed=smoothed)
    now = T_START + 200
    keys = _keys(store)
    w = bin_width(SPAN, now - SPAN, now)
    cache.update(store, keys, now - SPAN, now, w)
    for step in range(1, 6):
        fed = _feed(store, rng, 40, now, now + 3)  # three seconds of new samples
        now += 3
        band = cache.update(store, keys, now - SPAN, now, w)
        # Only what arrived since the last update is binned (each sample is 4 GPUs' values).
        assert cache.binned_points == fed, f"step {step}: binned {cache.binned_points}, fed {fed}"
        full = BandCache(smoothed=smoothed).update(store, keys, now - SPAN, now, w)
        np.testing.assert_array_equal(band.t, full.t)
        for name in band.lines:
            np.testing.assert_allclose(band.lines[name], full.lines[name], rtol=1e-9, equal_nan=True)
        assert [k for k, _ in band.top] == [k for k, _ in full.top]
        for (_, a), (_, b) in zip(band.top, full.top):
            np.testing.assert_allclose(a, b, rtol=1e-9, equal_nan=True)
    ref = _reference(store, keys, now - SPAN, now, w, smoothed)
    for name in ref:
        np.testing.assert_allclose(band.lines[name], ref[name], rtol=1e-6)
    assert band.n_series == len(keys)


def test_a_new_series_and_a_replaced_ring_are_binned_from_their_history():
    rng = np.random.default_rng(3)
    store = SeriesStore(history_s=600, interval_s=1.0)
    _feed(store, rng, 10, T_START, T_START + 100)
    now = T_START + 100
    w = bin_width(SPAN, now - SPAN, now)
    cache = BandCache()
    cache.update(store, _keys(store), now - SPAN, now, w)
    _feed(store, rng, 12, now, now + 2)  # two nodes join (with 2 s of history)
    store.drop_node("n0")  # one leaves and comes back with a new ring
    _feed(store, rng, 1, now + 1, now + 2)
    now += 2
    keys = _keys(store)
    band = cache.update(store, keys, now - SPAN, now, w)
    full = BandCache().update(store, keys, now - SPAN, now, w)
    for name in band.lines:
        np.testing.assert_allclose(band.lines[name], full.lines[name], rtol=1e-9)
    assert band.n_series == 12 * 4
    # Series leave (a node's jobs end) and one is named before its ring exists: their rows are
    # freed and reused, the band is still the full recompute's.
    keys = [k for k in keys if k[0] != "n5"] + [("n99", "gpu0", "util")]
    band = cache.update(store, keys, now - SPAN, now, w)
    _feed(store, rng, 100, now, now + 1)  # n99 gets a ring (as do n12..n98)
    now += 1
    band = cache.update(store, keys, now - SPAN, now, w)
    full = BandCache().update(store, keys, now - SPAN, now, w)
    for name in band.lines:
        np.testing.assert_allclose(band.lines[name], full.lines[name], rtol=1e-9)
    assert [k for k, _ in band.top] == [k for k, _ in full.top]
    assert band.n_series == 11 * 4 + 1


def test_bin_width_halves_and_doubles_with_the_window_not_every_second():
    assert bin_width(900, 0, 900) == 900 / BAND_BINS
    assert bin_width(900, 0, 60) == bin_width(900, 0, 70) == 900 / BAND_BINS / 16  # 60 s: 0.375 s bins
    assert bin_width(900, 0, 1800) == 900 / BAND_BINS * 2
    for span in (60.0, 61.0, 120.0, 899.0):
        assert BAND_BINS <= span / bin_width(900, 0, span) <= 2 * BAND_BINS
