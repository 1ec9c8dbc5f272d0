"""Ring buffers and min/max decimation (no Qt)."""

import numpy as np
import pytest

from gui.series import NodeSeries, SeriesStore, decimate_minmax, window


def test_ring_keeps_last_capacity_points_in_order():
    ns = NodeSeries(4)
    for i in range(6):
        ns.append(float(i), {("", "cpu"): i * 10.0})
    t, v = ns.get("", "cpu")
    assert t.tolist() == [2.0, 3.0, 4.0, 5.0]
    assert v.tolist() == [20.0, 30.0, 40.0, 50.0]
    assert ns.last("", "cpu") == 50.0


def test_metric_appearing_late_is_nan_before_and_missing_values_are_gaps():
    ns = NodeSeries(10)
    ns.append(0.0, {("", "cpu"): 1.0})
    ns.append(1.0, {("", "cpu"): 2.0, ("j1", "cpu_pct"): 5.0})
    ns.append(2.0, {("", "cpu"): 3.0})
    _t, v = ns.get("j1", "cpu_pct")
    assert np.isnan(v[0]) and v[1] == 5.0 and np.isnan(v[2])
    assert ns.last("j1", "cpu_pct") is None
    ns.drop_scope("j1")
    assert ns.get("j1", "cpu_pct")[0].size == 0


def test_store_capacity_from_history_and_interval():
    store = SeriesStore(history_s=3600, interval_s=0.5)
    assert store.capacity == 7200
    store.append("n1", 1.0, {("gpu0", "sm_util_pct"): 3.0})
    assert list(store.keys()) == [("n1", "gpu0", "sm_util_pct")]
    assert store.last(("n1", "gpu0", "sm_util_pct")) == 3.0
    assert store.get(("nope", "", "x"))[0].size == 0
    with pytest.raises(ValueError, match="too small"):
        NodeSeries(1)


def test_decimate_keeps_spikes_and_bounds_point_count():
    t = np.arange(10_000, dtype=np.float64)
    v = np.zeros(10_000, dtype=np.float32)
    v[5_123] = 100.0
    v[7_777] = -50.0
    dt, dv = decimate_minmax(t, v, 500)
    assert dt.size <= 1000
    assert dv.max() == 100.0 and dv.min() == -50.0
    assert np.all(np.diff(dt) >= 0), "time stays ordered"
    # small series pass through untouched
    st, _sv = decimate_minmax(t[:100], v[:100], 500)
    assert st.size == 100


def test_decimate_keeps_nan_gaps():
    t = np.arange(1000, dtype=np.float64)
    v = np.ones(1000, dtype=np.float32)
    v[100:300] = np.nan
    _, dv = decimate_minmax(t, v, 50)
    assert np.isnan(dv).any() and np.nanmax(dv) == 1.0


def test_window_includes_neighbours():
    t = np.arange(10, dtype=np.float64)
    v = t * 2
    wt, _wv = window(t, v, 3.5, 6.5)
    assert wt.tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert window(np.empty(0), np.empty(0), 0, 1)[0].size == 0
