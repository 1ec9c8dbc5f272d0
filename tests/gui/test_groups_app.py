"""Groups in the app (issue 14, "Seeing a group"): the ranks of a gang job (JobInfo structs with
JobSpec.group, as agentd sends them) are one row in the jobs table with the ranks beneath it,
one outline on the map, one set of group charts; a radar event marks the rank."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from agentd.protocol.gang import GroupAction
from agentd.protocol.jobs import Event, GroupMember, JobInfo, JobSpec
from agentd.protocol.messages import EventMsg, Pause, SnapshotReply
from gui.sources.base import DataSource
from tests.gui.gui_factories import inventory, job, sample

pytestmark = [pytest.mark.gui, pytest.mark.qt_log_ignore("does not support propagateSizeHints")]

T0 = 1_000_000.0
GANG = "g0.run-7"


def _rank(node: str, n: int, rank: int, world: int, role: str = "trainer", gpus: tuple[int, ...] | None = None,
          group: str = GANG, name: str = "") -> JobInfo:
    name = name or f"pretrain-r{rank}"  # as agentctl submit --nodes names the ranks
    local = rank % 8
    span = list(gpus) if gpus is not None else [local]
    spec = JobSpec(argv=["python", "train.py"], name=name,
                   group=GroupMember(id=group, rank=rank, world_size=world, role=role, node_rank=rank // 8,
                                     local_rank=local, gpu_indexes=span))
    j = job(f"{node}.{n}", gpus=tuple(span), name=name)
    return msgspec.structs.replace(j, spec=spec)


def _gang_state(tokens_per_rank: float = 100.0):
    """2 nodes x 8 GPUs: a 16-rank gang (one rank per GPU) plus one ordinary job on g1... no:
    an ordinary job lives on a third node, so the gang owns every GPU of g0 and g1."""
    from gui.state import ClusterState

    st = ClusterState(clock=lambda: T0 + 2)
    for ni, node in enumerate(("g0", "g1")):
        jobs = [_rank(node, 10 + r, ni * 8 + r, 16) for r in range(8)]
        ids = {j.id: 0 for j in jobs}
        s0 = sample(node, 0.0, gpus=8, jobs=ids, tokens=0.0)
        s1 = sample(node, 1.0, gpus=8, jobs=dict.fromkeys(ids, 1000000), tokens=tokens_per_rank)
        st.apply_snapshot(node, SnapshotReply(seq=1, inventory=inventory(node, gpus=8), samples=[s0, s1], jobs=jobs))
        st.set_link(node, "live")
    st.apply_snapshot("c0", SnapshotReply(seq=1, inventory=inventory("c0", gpus=8), jobs=[job("c0.1", gpus=(0, 1), name="solo")]))
    st.set_link("c0", "live")
    return st


def _radar(st, rank: int, status: str, wall_s: float = T0 + 1.5) -> None:
    node = "g0" if rank < 8 else "g1"
    jid = f"{node}.{10 + rank % 8}"
    st.apply_message(node, EventMsg(node=node, seq=50, event=Event(
        wall_s=wall_s, node=node, kind="radar", job_id=jid, message=f"rank {rank}: {status}",
        data={"group": GANG, "rank": rank, "node": node, "job_id": jid, "status": status, "class": "slow GPU",
              "evidence": {"busy_vs_median": "+12%"}})))


class Recorder(DataSource):
    """A source that records the requests the actions send (no daemon: what is sent is the test)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, object]] = []

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def nodes(self) -> list[str]: return ["g0", "g1", "c0"]
    def now_s(self) -> float: return T0 + 2

    def request(self, key: str, req) -> int:
        self.sent.append((key, req))
        return len(self.sent)


def _group_index(model):
    return next(model.index(i, 0) for i, r in enumerate(model.rows) if r.id == GANG)


def test_the_table_shows_one_group_row_with_its_16_ranks_summed_and_the_worst_rank(qtbot):
    from PySide6.QtCore import Qt

    from gui.models.jobs import GROUP_ROLE, RADAR_COLOURS, RANK_IDS_ROLE, JobTableModel

    st = _gang_state()
    model = JobTableModel(st, clock=st.clock)
    model.refresh()
    assert sorted(r.id for r in model.rows) == ["c0.1", GANG]  # 17 jobs, two rows
    g = _group_index(model)
    assert model.rowCount(g) == 16
    text = [model.index(g.row(), c).data() for c in range(10)]
    assert text[1] == "pretrain  ·  16 ranks (16 trainer)"
    assert text[2] == "2 nodes" and text[3] == "16/16 running" and text[5] == "16 GPUs"
    assert text[8] == "1.6k tok/s"  # 16 ranks x 100 tokens/s
    assert model.rows[[r.id for r in model.rows].index(GANG)].throughput == pytest.approx(1600.0)
    ranks = [model.index(k, 1, g).data() for k in range(16)]
    assert ranks[0] == "rank 0 · trainer" and ranks[15] == "rank 15 · trainer"
    assert model.index(3, 0, g).parent() == g and model.index(3, 0, g).data(GROUP_ROLE) == GANG
    assert len(g.data(RANK_IDS_ROLE)) == 16 and g.data(GROUP_ROLE) == GANG

    # The radar names rank 5: the group row says so, the rank's row is marked; nothing resets.
    seen = {"reset": 0, "inserted": 0, "removed": 0}
    model.modelReset.connect(lambda: seen.__setitem__("reset", seen["reset"] + 1))
    model.rowsInserted.connect(lambda *_: seen.__setitem__("inserted", seen["inserted"] + 1))
    model.rowsRemoved.connect(lambda *_: seen.__setitem__("removed", seen["removed"] + 1))
    _radar(st, 3, "ok")
    _radar(st, 5, "straggler")
    model.refresh()
    assert seen == {"reset": 0, "inserted": 0, "removed": 0}
    g = _group_index(model)
    assert model.index(g.row(), 3).data() == "16/16 running · rank 5 straggler"
    assert model.index(5, 3, g).data() == "running · straggler"
    assert model.index(5, 3, g).data(Qt.ItemDataRole.ForegroundRole).name() == RADAR_COLOURS["straggler"]
    assert model.index(3, 3, g).data() == "running"
    assert "+12%" in model.index(g.row(), 0).data(Qt.ItemDataRole.ToolTipRole)
    # A later verdict wins; an older one arriving late does not.
    _radar(st, 5, "hung", wall_s=T0 + 1.8)
    _radar(st, 5, "ok", wall_s=T0 + 1.6)
    model.refresh()
    assert model.index(_group_index(model).row(), 3).data() == "16/16 running · rank 5 hung"

    # A rank pausing changes its row and the group's in place.
    old = st.nodes["g1"].jobs["g1.14"]  # rank 12
    st.apply_job("g1", msgspec.structs.replace(old, state="paused"))
    model.refresh()
    g = _group_index(model)
    assert seen == {"reset": 0, "inserted": 0, "removed": 0}
    assert model.index(12, 3, g).data() == "paused" and model.index(g.row(), 3).data().startswith("15/16 running")
    # A failed rank fails the group (as agentctl says it), naming the rank.
    st.apply_job("g0", msgspec.structs.replace(st.nodes["g0"].jobs["g0.11"], state="failed", reason="exit 1", ended_s=T0 + 1))
    model.refresh()
    g = _group_index(model)
    assert model.index(g.row(), 3).data().startswith("1/16 failed — rank 1 (g0.11) failed: exit 1")


def test_filter_keeps_the_group_with_its_matching_ranks(qtbot):
    from gui.models.jobs import JobFilterProxy, JobTableModel

    st = _gang_state()
    model = JobTableModel(st, clock=st.clock)
    model.refresh()
    proxy = JobFilterProxy()
    proxy.setSourceModel(model)
    proxy.set_filter_text("g1.13")  # one rank's id: its group stays, with that rank beneath
    assert proxy.rowCount() == 1
    top = proxy.index(0, 0)
    assert top.data() == GANG and proxy.rowCount(top) == 1 and proxy.index(0, 0, top).data() == "g1.13"
    proxy.set_filter_text("pretrain")  # the group's name: the group and all of its ranks
    top = proxy.index(0, 0)
    assert proxy.rowCount() == 1 and proxy.rowCount(top) == 16


def test_actions_on_a_group_row_act_on_every_rank(qtbot):
    from gui.actions import Actions
    from gui.views.jobs import JobsPanel

    st = _gang_state()
    src = Recorder()
    panel = JobsPanel(st, Actions(src, st))
    qtbot.addWidget(panel)
    panel.refresh()
    shown = []
    panel.group_selected.connect(shown.append)
    panel.select([GANG])
    assert shown == [GANG] and panel.selected_group() == GANG
    assert len(panel.selected()) == 16
    assert panel.act_pause.isEnabled() and not panel.act_migrate.isEnabled() and not panel.act_logs.isEnabled()
    panel.act_pause.trigger()
    # A whole group: one group_action per node, as agentctl does (the ranks freeze together).
    assert sorted((k, r.group, r.action) for k, r in src.sent if isinstance(r, GroupAction)) == [
        ("g0", GANG, "pause"), ("g1", GANG, "pause")]
    assert not [r for _k, r in src.sent if isinstance(r, Pause)]
    panel.actions.set_priority(panel.selected(), 3)
    assert sorted((k, r.action, r.priority) for k, r in src.sent if isinstance(r, GroupAction) and r.action == "priority") == [
        ("g0", "priority", 3), ("g1", "priority", 3)]
    # Part of a group: each chosen rank on its own.
    src.sent.clear()
    panel.actions.pause(["g0.10", "g1.11"])
    assert sorted((k, r.job) for k, r in src.sent if isinstance(r, Pause)) == [("g0", "g0.10"), ("g1", "g1.11")]
    # A rank selected from the map opens its group and selects only that rank.
    panel.select(["g1.14"])
    assert panel.selected() == ["g1.14"] and panel.selected_group() == GANG
    panel.select(["c0.1"])
    assert shown[-1] == "" and panel.selected() == ["c0.1"]


def test_the_map_outlines_exactly_the_groups_gpus_and_marks_the_straggler(qtbot):
    from gui.views.clustermap import ClusterMap
    from gui.views.mapgroups import GROUP_OUTLINE, RADAR_MARK_COLOURS

    st = _gang_state()
    _radar(st, 9, "straggler")
    m = ClusterMap(st)
    qtbot.addWidget(m)
    m.resize(900, 500)
    m.show()
    qtbot.waitExposed(m)
    m.refresh()
    c = m.canvas
    tiles, keys = c.group_tiles(GANG)
    assert tiles == {(n, g) for n in ("g0", "g1") for g in range(8)} and keys == {"g0", "g1"}
    assert c.radar_marks() == [("g1", 1, "straggler")]
    assert c.shown_group() == ""
    c.set_outline_group(GANG)
    assert c.shown_group() == GANG
    img = c.grab().toImage()
    lay = c.layout_

    def px(key: str, gpu: int, dx: int, dy: int):
        x, y, w, h = lay.tile_rect(key, gpu)
        col = img.pixelColor(x + (dx if dx >= 0 else w + dx), y + (dy if dy >= 0 else h + dy))
        return col.name()

    assert px("g0", 4, 0, lay.geo.tile // 2) == GROUP_OUTLINE  # the left edge of a rank's tile
    assert px("c0", 0, 0, lay.geo.tile // 2) != GROUP_OUTLINE  # the solo job on c0: not outlined
    assert px("g1", 1, -2, 1) == RADAR_MARK_COLOURS["straggler"]  # the corner flag of rank 9
    assert px("g1", 2, -2, 1) != RADAR_MARK_COLOURS["straggler"]
    # Hovering another group's rank outlines that group instead; the hover text names the rank.
    from gui.maplayout import Hit

    c._hover = Hit(c.group["g1"], "g1", 1)
    assert c.shown_group() == GANG
    assert "rank 9 of 16 (trainer) in group g0.run-7 · radar: straggler" in c.describe(c._hover)
    c._hover = Hit(c.group["c0"], "c0", 0)
    assert c.shown_group() == GANG  # a non-group job under the mouse: the selection stays


def _rl_state():
    """An async RL run: 2 trainer ranks (samples, policy_version 10) on t0, 2 rollout ranks
    (tokens, queue_depth 5 and 7, policy_version 8 and 9) on r0 and r1, 60 s of samples."""
    from agentd.metrics.samples import AppMetric
    from gui.state import ClusterState

    gid = "t0.run-8"
    st = ClusterState(clock=lambda: T0 + 60)
    layout = {"t0": [("trainer", 0, (0,)), ("trainer", 1, (1,))], "r0": [("rollout", 2, (0, 1))], "r1": [("rollout", 3, (0, 1))]}
    for node, ranks in layout.items():
        jobs = [_rank(node, 20 + rank, rank, 4, role, gpus, group=gid, name="grpo") for role, rank, gpus in ranks]
        samples = []
        for t in range(61):
            s = sample(node, float(t), jobs={j.id: t * 1_000_000 for j in jobs})
            app = []
            for j in jobs:
                m = j.spec.group
                if m.role == "trainer":
                    app += [AppMetric(job_id=j.id, name="samples", value=50.0 * t, counter=True),
                            AppMetric(job_id=j.id, name="policy_version", value=10.0)]
                else:
                    app += [AppMetric(job_id=j.id, name="tokens", value=1000.0 * t, counter=True),
                            AppMetric(job_id=j.id, name="queue_depth", value=5.0 if m.rank == 2 else 7.0),
                            AppMetric(job_id=j.id, name="policy_version", value=8.0 if m.rank == 2 else 9.0)]
            samples.append(msgspec.structs.replace(s, app=app))
        st.apply_snapshot(node, SnapshotReply(seq=1, inventory=inventory(node), samples=samples, jobs=jobs))
        st.set_link(node, "live")
    return st, gid


def _curves(chart):
    chart.redraw(T0 + 60, force=True)
    return {chart._label(k): c.getData()[1] for k, c in chart.curves.items()}


def test_group_charts_sum_the_ranks_per_role_with_queue_depth_and_policy_lag(qtbot):
    from gui.state import ChartScope
    from gui.views.charts import Chart, ChartsPanel

    st, gid = _rl_state()
    per_role = Chart(st, ("job", "throughput"), ChartScope("group", "", gid))
    qtbot.addWidget(per_role)
    got = _curves(per_role)
    # Side by side, never added up: rollout tokens/s and trainer samples/s.
    assert set(got) == {"trainer: 2 ranks", "rollout: 2 ranks"}
    assert np.nanmax(got["trainer: 2 ranks"]) == pytest.approx(100.0)  # 2 x 50 samples/s
    assert np.nanmax(got["rollout: 2 ranks"]) == pytest.approx(2000.0)  # 2 x 1,000 tokens/s
    rollout = Chart(st, ("job", "app:tokens_per_s"), ChartScope("group", "rollout", gid))
    qtbot.addWidget(rollout)
    assert list(_curves(rollout)) == ["rollout: 2 ranks"]
    queue = Chart(st, ("job", "app:queue_depth"), ChartScope("group", "", gid))
    qtbot.addWidget(queue)
    q = _curves(queue)
    assert list(q) == ["rollout: 2 ranks"] and q["rollout: 2 ranks"][-1] == pytest.approx(12.0)
    lag = Chart(st, ("job", "app:policy_version"), ChartScope("group", "", gid))
    qtbot.addWidget(lag)
    lags = _curves(lag)
    assert lags["rollout: versions behind"][-1] == pytest.approx(2.0)  # 10 - 8
    assert lags["trainer: versions behind"][-1] == pytest.approx(0.0)
    assert "Policy lag" in lag.plot.getPlotItem().getAxis("left").labelText
    # The scope survives settings, and the picker offers the group and its roles.
    assert ChartScope.from_json(lag.settings()["scope"]) == ChartScope("group", "", gid)
    items = [per_role.scope_box.itemText(i) for i in range(per_role.scope_box.count())]
    assert "Group grpo (t0.run-8) — per role" in items and "Group grpo — rollout" in items

    panel = ChartsPanel(st)
    qtbot.addWidget(panel)
    charts = panel.add_group_charts(gid)
    assert [(c.chart_metric.name, c.scope.node) for c in charts] == [
        ("throughput", "trainer"), ("throughput", "rollout"), ("app:queue_depth", ""), ("app:policy_version", "")]
    assert charts[0].parentWidget() is charts[1].parentWidget() is not panel.splitter  # one row
    panel.remove_chart(charts[1])
    panel.remove_chart(charts[0])
    assert panel.splitter.count() == 1  # the emptied row went with its charts


def test_simulated_cluster_has_a_gang_and_an_async_rl_group():
    from gui.groups import GroupRow, group_ids, group_rows
    from gui.sim_cluster import simulated_state

    st = simulated_state(16)
    groups = group_ids(st.nodes)
    assert {name for name, _ in groups.values()} == {"pretrain-8b", "grpo-async"}
    rows = {r.name: r for r in group_rows(st.job_rows(), st.nodes, st.radar) if isinstance(r, GroupRow)}
    gang, rl = rows["pretrain-8b"], rows["grpo-async"]
    assert gang.world_size == 16 and gang.node_count == 2 and gang.worst == "straggler" and gang.worst_rank == 11
    assert rl.node_count == 8 and set(rl.roles) == {"trainer", "rollout"}
    assert {(role, unit) for role, _v, unit in rl.role_throughput} == {("trainer", "samples/s"), ("rollout", "tok/s")}
    assert len(st.radar.bad()) == 1


def test_ten_thousand_jobs_with_groups_update_in_place(qtbot):
    """50 groups of 16 ranks (8 per node on 2 nodes) among 10,000 jobs: a refresh after 100
    ranks paused changes rows in place; a rank that joins a group is inserted under it."""
    from gui.models.jobs import JobTableModel
    from gui.state import ClusterState

    st = ClusterState(clock=lambda: T0 + 100)
    for n in range(100):
        node = f"gpu-{n}"
        gid = f"gpu-{n - n % 2}.run-{n // 2}"
        jobs = [_rank(node, j, (n % 2) * 8 + j, 16, group=gid) if j < 8 else job(f"{node}.{j}", gpus=(j % 8,), name=f"train-{j}")
                for j in range(100)]
        st.apply_snapshot(node, SnapshotReply(seq=1, inventory=inventory(node, gpus=8), jobs=jobs))
        st.set_link(node, "live")
    model = JobTableModel(st, clock=st.clock)
    model.refresh()
    assert model.rowCount() == 100 * 92 + 50
    seen = {"reset": 0, "inserted": 0, "removed": 0, "changed": 0}
    model.modelReset.connect(lambda: seen.__setitem__("reset", seen["reset"] + 1))
    model.rowsInserted.connect(lambda p, a, b: seen.__setitem__("inserted", seen["inserted"] + b - a + 1))
    model.rowsRemoved.connect(lambda p, a, b: seen.__setitem__("removed", seen["removed"] + b - a + 1))
    model.dataChanged.connect(lambda *_: seen.__setitem__("changed", seen["changed"] + 1))
    model.refresh()
    assert seen == {"reset": 0, "inserted": 0, "removed": 0, "changed": 0}
    for n in range(100):
        old = st.nodes[f"gpu-{n}"].jobs[f"gpu-{n}.{n % 8}"]
        st.apply_job(f"gpu-{n}", msgspec.structs.replace(old, state="paused"))
    model.refresh()
    assert seen["reset"] == seen["inserted"] == seen["removed"] == 0 and seen["changed"] >= 100
    g = next(model.index(i, 0) for i, r in enumerate(model.rows) if r.id == "gpu-0.run-0")
    assert model.index(g.row(), 3).data() == "14/16 running"
    # A 17th rank (a replacement) joins group run-0: inserted beneath it, nothing else moves.
    st.apply_job("gpu-1", _rank("gpu-1", 500, 16, 17, group="gpu-0.run-0"))
    model.refresh()
    assert seen["reset"] == 0 and model.rowCount(g) == 17 and model.index(16, 1, g).data() == "rank 16 · trainer"


@pytest.mark.procs
@pytest.mark.timeout(180)
def test_a_real_gang_is_one_row_and_a_group_pause_pauses_every_rank(qtbot, tmp_path, agentd_factory, open_window):
    """Two real daemons, a group submitted through the real gang path (agentctl submit --nodes),
    the window following both: one group row with its two ranks; Pause on the group row pauses
    every rank (the daemons say so)."""
    import subprocess
    import sys

    from agentd.clusterfile import ClusterNode, dump_cluster
    from agentd.protocol.messages import Cancel, Jobs
    from agentd.transport.client import NodeClient
    from tests.gui.conftest import BUSY_LOOP, wait_until

    a, b = agentd_factory("n1"), agentd_factory("n2")
    cluster = tmp_path / "cluster.toml"
    cluster.write_text(dump_cluster([ClusterNode(name=p.node, endpoint=p.ctl) for p in (a, b)]))
    out = subprocess.run([sys.executable, "-m", "agentd.cli", "--cluster", str(cluster), "submit", "--nodes", "n1,n2",
                          "--name", "ring", "--", sys.executable, "-c", BUSY_LOOP],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr

    def ranks() -> list:
        found = []
        for p in (a, b):
            with NodeClient(p.ctl, timeout_s=10) as c:
                found += [j for j in c.call(Jobs(active_only=True)).jobs if j.spec.group is not None]
        return found

    try:
        w = open_window(a, b)
        m = w.jobs.model

        def group_row():
            return next((r for r in m.rows if getattr(r, "ranks", ())), None)

        wait_until(qtbot, lambda: (g := group_row()) is not None and g.running == 2, timeout_s=60, what="the group row, 2 ranks running")
        g = group_row()
        gi = next(m.index(i, 0) for i, r in enumerate(m.rows) if r.id == g.id)
        assert g.name == "ring" and m.rowCount(gi) == 2 and m.index(gi.row(), 3).data() == "2/2 running"
        assert {m.index(k, 1, gi).data() for k in range(2)} == {"rank 0", "rank 1"}
        w.jobs.select([g.id])
        assert sorted(w.jobs.selected()) == sorted(r.id for r in g.ranks)
        assert w.map.canvas.outline_group == g.id  # the window told the map
        w.jobs.act_pause.trigger()
        wait_until(qtbot, lambda: sorted(j.state for j in ranks()) == ["paused", "paused"], timeout_s=30, what="both ranks paused")
        wait_until(qtbot, lambda: m.index(next(i for i, r in enumerate(m.rows) if r.id == g.id), 3).data() == "2/2 paused",
                   what="the group row reads 2/2 paused")
        wait_until(qtbot, lambda: any("2 ranks paused, frozen within" in line for line in w.events.lines),
                   what="the group pause and its skew in the event log")
    finally:
        for p in (a, b):  # agentd leaves jobs running when it stops: cancel the ranks
            with NodeClient(p.ctl, timeout_s=10) as c:
                for j in c.call(Jobs(active_only=True)).jobs:
                    c.call(Cancel(job=j.id, grace_s=0.5), timeout_s=10.0)
        wait_until(qtbot, lambda: ranks() == [], timeout_s=20, what="the ranks ended")
