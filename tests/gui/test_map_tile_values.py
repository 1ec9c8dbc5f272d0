"""The map's tile values, read for all 8,000 GPUs in flat comprehensions, equal the plain
per-GPU computation for every numeric metric (missing values, nodes without numbers, nodes
gone from the state, GPUs past the widest node); a job starting does not re-lay the map
(nor list its grouping again: ~4 ms at 1,000 nodes, every second)."""

from __future__ import annotations

import random

import numpy as np
import pytest

pytestmark = [pytest.mark.gui, pytest.mark.qt_log_ignore("does not support propagateSizeHints")]


def _reference(canvas) -> np.ndarray:
    from gui.views.mapcanvas import NO_VALUE, _metric_value

    m, G = canvas.map_metric, canvas._max_gpus
    out = np.full(len(canvas.order) * G, NO_VALUE, dtype=np.int16)
    for i, k in enumerate(canvas.order):
        node = canvas.state.nodes.get(k)
        if node is None or node.derived is None:
            continue
        for g in node.derived.gpus:
            v = _metric_value(m, g)
            if g.index < G and v is not None and v == v:
                out[i * G + g.index] = min(NO_VALUE, max(0, round((v - m.lo) * 100.0 / (m.hi - m.lo))))
    return out


def test_tile_values_equal_a_per_gpu_computation(qtbot):
    import msgspec

    from gui.sim_cluster import simulated_state
    from gui.views.mapcanvas import MAP_METRICS, MapCanvas

    st = simulated_state(60, gpus=8, seed=11)
    rng = random.Random(4)
    keys = list(st.nodes)
    for k in keys[:5]:
        st.nodes[k].derived = None  # no numbers yet
    for k in keys[5:20]:  # some values missing, some out of range
        d = st.nodes[k].derived
        if d is None:
            continue
        gpus = [msgspec.structs.replace(g, sm_util_pct=rng.choice([None, -5.0, 130.0, float("nan"), rng.uniform(0, 100)]),
                                    temp_c=rng.choice([None, rng.uniform(20, 110)]), power_w=rng.choice([None, rng.uniform(0, 900)]))
                for g in d.gpus]
        st.nodes[k].derived = msgspec.structs.replace(d, gpus=gpus)
    c = MapCanvas(st)
    qtbot.addWidget(c)
    c.resize(1200, 700)
    c.refresh()
    del st.nodes[keys[30]]  # gone from the state, still in the layout until the next refresh
    numeric = [m for m in MAP_METRICS if not m.categorical]
    assert {m.name for m in numeric} >= {"util", "memory", "temperature", "power"}
    for m in numeric:
        c.map_metric = m
        slots, _cats = c.tile_values()
        ref = _reference(c)
        assert np.array_equal(slots, ref), m.name
        assert (ref != ref.max()).any()  # values were there to compare


def test_a_job_starting_does_not_re_lay_the_map(qtbot):
    from gui.sim_cluster import simulated_state
    from gui.views.mapcanvas import MapCanvas
    from tests.gui.gui_factories import job

    st = simulated_state(40, gpus=8, seed=2)
    c = MapCanvas(st)
    qtbot.addWidget(c)
    c.resize(1200, 700)
    c.refresh()
    relayouts, looked = [], []
    real, labels = c._relayout, c.labels_of
    c._relayout = lambda: (relayouts.append(1), real())
    c.labels_of = lambda k: (looked.append(k), labels(k))[1]  # the grouping reads every node's labels
    key = next(iter(st.nodes))
    srev = st.structure_revision
    st.apply_job(key, job(f"{st.nodes[key].name}.9999"))
    assert st.structure_revision > srev
    c.refresh()
    assert relayouts == [] and looked == []  # not even the grouping was listed again
    st.add_node("a-new-node")
    c.refresh()
    assert relayouts == [1]
