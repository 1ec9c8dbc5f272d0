"""The cluster map: pure layout math, painting 1,000 nodes x 8 GPUs, hit-testing, search, the
window's choice of view, and job colours shared with the jobs table."""

from __future__ import annotations

import time

import pytest

from gui.maplayout import TILE_SIZES, Hit, group_of, layout

pytestmark = [pytest.mark.gui, pytest.mark.qt_log_ignore("does not support propagateSizeHints")]


def _groups(n: int, per_rack: int = 32) -> tuple[list[tuple[str, list[str]]], dict[str, int]]:
    keys = [f"r{i // per_rack + 1:02d}-n{i % per_rack + 1:02d}" for i in range(n)]
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(k[:3], []).append(k)
    return list(groups.items()), dict.fromkeys(keys, 8)


def test_group_comes_from_labels_then_the_name():
    assert group_of("gpu-17", {"rack": "r3", "partition": "p"}) == "r3"
    assert group_of("gpu-17", {"group": "g1", "rack": "r3"}) == "g1"
    assert group_of("sim-12", {}) == "sim"
    assert group_of("rack3-n07") == "rack3-n"
    assert group_of("42") == "nodes"


@pytest.mark.parametrize("width,height", [(1280, 700), (880, 560)])
def test_a_thousand_nodes_of_eight_gpus_fit_one_screen(width, height):
    groups, gpus = _groups(1000)
    lay = layout(groups, gpus, width, height)
    assert lay.height <= height and lay.width <= width
    assert lay.geo.tile >= TILE_SIZES[-1]
    # Every GPU tile is where hit-testing says it is, inside the canvas.
    for key in ("r01-n01", "r07-n13", "r32-n08"):
        for gpu in (0, 3, 4, 7):
            x, y, w, h = lay.tile_rect(key, gpu)
            assert x >= 0 and x + w <= width and y + h <= height
            assert lay.hit(x, y) == Hit(key[:3], key, gpu)
            assert lay.hit(x + w - 1, y + h - 1) == Hit(key[:3], key, gpu)


def test_layout_reflows_and_uses_big_tiles_for_small_clusters():
    groups, gpus = _groups(16)
    wide = layout(groups, gpus, 1600, 800)
    narrow = layout(groups, gpus, 500, 800)
    assert wide.geo.tile == TILE_SIZES[0]  # 16 nodes: the biggest tiles, with values and names
    assert narrow.boxes[0].cols < wide.boxes[0].cols
    assert layout(groups, gpus, 500, None).geo.tile == TILE_SIZES[0]
    # No two nodes overlap.
    rects = [wide.node_rect(k) for k in gpus]
    for i, (x, y, w, h) in enumerate(rects):
        for (x2, y2, w2, h2) in rects[i + 1:]:
            assert x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y


def test_hit_between_tiles_and_on_headers():
    groups, gpus = _groups(40)
    gpus["r01-n02"] = 2  # a node with fewer GPUs: its empty slots are the node, not a GPU
    lay = layout(groups, gpus, 1000, 600)
    box = lay.boxes[0]
    assert lay.hit(box.x + 5, box.y + 3) == Hit("r01")
    x, y, _w, _h = lay.tile_rect("r01-n02", 5)
    assert lay.hit(x + 1, y + 1) == Hit("r01", "r01-n02")
    assert lay.hit(-5, -5) is None


@pytest.fixture(scope="module")
def big_state():
    from gui.sim_cluster import simulated_state

    return simulated_state(1000, gpus=8, seed=3)


def _pixel(canvas, x: int, y: int):
    img = canvas.grab().toImage()
    return img.pixelColor(x, y)


def test_map_paints_a_thousand_nodes_and_hit_tests(qtbot, big_state):
    from PySide6.QtGui import QColor

    from gui.theme import is_dark, load_colour
    from gui.views.clustermap import ClusterMap

    m = ClusterMap(big_state)
    qtbot.addWidget(m)
    m.resize(1400, 800)
    m.show()
    qtbot.waitExposed(m)
    m.refresh()
    c = m.canvas
    assert len(c.order) == 1000 and c.layout_ is not None
    assert c.layout_.height <= c.height()  # all of it on screen, no scrolling
    t0 = time.perf_counter()
    c.render()
    c.repaint()
    assert time.perf_counter() - t0 < 5.0  # sanity only; bench/map_frame.py measures
    key = next(k for k in c.order if big_state.nodes[k].status == "live" and big_state.nodes[k].derived is not None)
    g = big_state.nodes[key].gpu(5)
    x, y, w, h = c.layout_.tile_rect(key, 5)
    cx, cy = x + w // 2, y + h // 2
    assert c.hit(__import__("PySide6.QtCore", fromlist=["QPoint"]).QPoint(cx, cy)) == Hit(c.group[key], key, 5)
    expected = load_colour(float(round(g.sm_util_pct)), is_dark())
    got = _pixel(c, cx, cy)
    assert (got.red(), got.green(), got.blue()) == (expected.red(), expected.green(), expected.blue())
    assert "GPU5" in c.describe(Hit(c.group[key], key, 5)) and key in c.describe(Hit(c.group[key], key, 5))
    # A node that is not live: washed-out tiles, frame in its link colour.
    stale = next(k for k in c.order if big_state.nodes[k].status in ("stale", "down"))
    x, y, w, h = c.layout_.node_rect(stale)
    frame = _pixel(c, x, y + c.layout_.geo.name_h + h // 3)
    assert frame != QColor(c.palette().color(c.palette().ColorRole.Mid))


def test_search_dims_what_does_not_match(qtbot, big_state):
    from PySide6.QtCore import QPoint

    from gui.views.clustermap import ClusterMap

    m = ClusterMap(big_state)
    qtbot.addWidget(m)
    m.resize(1400, 800)
    m.show()
    qtbot.waitExposed(m)
    m.refresh()
    c = m.canvas
    live = [k for k in c.order if big_state.nodes[k].status == "live" and big_state.nodes[k].derived is not None]
    target, other = live[10], live[500]

    def centre(key):
        x, y, w, h = c.layout_.tile_rect(key, 0)
        return x + w // 2, y + h // 2

    before_t, before_o = _pixel(c, *centre(target)), _pixel(c, *centre(other))
    m.search.setText(target)
    assert c.matches == 1 and "1 match" in m.count.text()
    assert _pixel(c, *centre(target)) == before_t
    dimmed = _pixel(c, *centre(other))
    base = c.palette().color(c.palette().ColorRole.Base)
    # Dimmed: most of the way to the background.
    assert abs(dimmed.lightness() - base.lightness()) < abs(before_o.lightness() - base.lightness()) or before_o == dimmed == base
    assert dimmed != before_o or before_o == base
    # A job id finds the GPUs of that job.
    job = next(j for j in big_state.nodes[other].jobs.values() if j.state == "running")
    m.search.setText(job.id)
    assert c.matches == 1
    assert c.hit(QPoint(*centre(other))).key == other


def test_click_opens_the_card_and_selects_the_job(qtbot, big_state):
    from gui.views.clustermap import ClusterMap

    m = ClusterMap(big_state)
    qtbot.addWidget(m)
    m.resize(1200, 800)
    m.show()
    m.refresh()
    c = m.canvas
    key = next(k for k in c.order if any(j.state == "running" and 0 in j.gpus for j in big_state.nodes[k].jobs.values()))
    job = next(j.id for j in big_state.nodes[key].jobs.values() if 0 in j.gpus)
    with qtbot.waitSignal(c.node_activated) as node_sig, qtbot.waitSignal(c.job_clicked) as job_sig:
        c.click(Hit(c.group[key], key, 0))
    assert node_sig.args == [key] and job_sig.args == [job]
    with qtbot.waitSignal(c.search_requested) as sig:
        c.click(Hit("r05"))
    assert sig.args == ["r05"]


def test_job_colour_is_the_same_on_the_map_and_in_the_table(qtbot, big_state):
    from PySide6.QtCore import Qt

    from gui.models.jobs import JobTableModel
    from gui.theme import job_colour
    from gui.views.clustermap import ClusterMap

    m = ClusterMap(big_state)
    qtbot.addWidget(m)
    m.resize(1400, 800)
    m.show()
    m.refresh()
    m.set_metric("job")
    c = m.canvas
    key = next(k for k in c.order if big_state.nodes[k].status == "live"
               and any(j.state == "running" and 2 in j.gpus for j in big_state.nodes[k].jobs.values()))
    job = next(j for j in big_state.nodes[key].jobs.values() if 2 in j.gpus)
    x, y, w, h = c.layout_.tile_rect(key, 2)
    got = _pixel(c, x + w // 2, y + h // 2)
    want = job_colour(job.id)
    assert (got.red(), got.green(), got.blue()) == (want.red(), want.green(), want.blue())
    model = JobTableModel(big_state)
    model.refresh()
    row = next(i for i, r in enumerate(model.rows) if r.id == job.id)
    assert model.data(model.index(row, 0), Qt.ItemDataRole.DecorationRole) == want


def test_window_shows_the_map_for_many_nodes_and_cards_for_few(qtbot, settings):
    from gui.main_window import MainWindow
    from gui.sim_cluster import simulated_state
    from gui.sources.base import Capabilities, DataSource

    class Still(DataSource):
        def start(self) -> None: ...
        def stop(self) -> None: ...
        def nodes(self) -> list[str]: return []
        def now_s(self) -> float: return time.time()
        def capabilities(self) -> Capabilities: return Capabilities(can_control=False, label="test")
        def request(self, key, req) -> int: return 0

    few = MainWindow(Still(), settings, state=simulated_state(3))
    qtbot.addWidget(few)
    few.refresh_views()
    assert few.view() == "cards" and len(few.topology.cards) == 3
    many = MainWindow(Still(), settings, state=simulated_state(40))
    qtbot.addWidget(many)
    many.show()
    many.refresh_views()
    assert many.view() == "map" and len(many.map.canvas.order) == 40
    key = many.map.canvas.order[20]
    many.map.canvas.node_activated.emit(key)
    assert many.view() == "cards" and key in many.topology.cards
    many.refresh_views()
    assert many.view() == "cards"  # the person chose: no switching back by itself


def test_alerts_mark_their_node_and_gpu_and_join_the_tooltip(qtbot) -> None:
    """A node with an alert gets a corner mark, the GPU it names a frame, both in the severity's
    colour, and the hover text lists the alert."""
    from PySide6.QtCore import QPoint
    from PySide6.QtGui import QColor

    from agentd.protocol.alerts import Alert, alert_data
    from agentd.protocol.jobs import Event
    from gui.sim_cluster import simulated_state
    from gui.theme import SEVERITY_COLOURS
    from gui.views.clustermap import ClusterMap

    state = simulated_state(16, gpus=8, seed=1)
    key = sorted(state.nodes)[0]
    daemon = state.nodes[key].inventory.node
    alert = Alert(rule="gpu_xid", node=daemon, subject="gpu 2", severity="critical", message="GPU 2: 1 new Xid error",
                  since_s=1.0)
    state.alerts.apply(Event(wall_s=1.0, node=daemon, kind="alert", message="x", data=alert_data(alert, "firing")))
    m = ClusterMap(state)
    qtbot.addWidget(m)
    m.resize(1200, 700)
    m.show()
    qtbot.waitExposed(m)
    m.refresh()
    c = m.canvas
    x, y, w, _h = c.layout_.node_rect(key)
    assert _pixel(c, x + w - 2, y + 1) == QColor(SEVERITY_COLOURS["critical"])
    tx, ty, tw, th = c.layout_.tile_rect(key, 2)
    assert _pixel(c, tx, ty + th // 2) == QColor(SEVERITY_COLOURS["critical"])
    hit = c.hit(QPoint(tx + tw // 2, ty + th // 2))
    assert hit is not None and hit.key == key and "Xid" in c.describe(hit)
    other = sorted(state.nodes)[1]
    ox, oy, ow, _ = c.layout_.node_rect(other)
    assert _pixel(c, ox + ow - 2, oy + 1) != QColor(SEVERITY_COLOURS["critical"])
