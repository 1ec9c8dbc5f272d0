"""The app pointed at a real relay (agentd --relay) over a real fleet simulator: every node
behind it from one stream, detail on demand, actions through the relay, failover."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agentd.protocol import relay as relay_protocol
from agentd.protocol.messages import JobReply, Show
from agentd.transport.client import NodeClient
from tests.relay.relay_helpers import relay, sim_fleet, wait_nodes

from .conftest import wait_until

pytestmark = [pytest.mark.gui, pytest.mark.procs, pytest.mark.qt_log_ignore("does not support propagateSizeHints")]


def _sims(w) -> dict:
    return {k: n for k, n in w.state.nodes.items() if k.startswith("sim-")}


def test_app_through_a_relay_sees_50_nodes_follows_one_and_pauses(qtbot, tmp_path: Path, open_window) -> None:
    with sim_fleet(tmp_path, 50) as cluster, relay(tmp_path, cluster) as r:
        wait_nodes(r, 51, timeout_s=90)
        w = open_window(r)
        wait_until(qtbot, lambda: len(w.state.nodes) == 51 and all(
            n.link == "live" and n.derived is not None and n.inventory is not None for n in _sims(w).values()),
            timeout_s=60, what="50 simulated nodes + the relay, live, with numbers")
        assert r.node in w.state.nodes and len(_sims(w)) == 50
        assert all(len(n.inventory.gpus) == 4 and n.inventory.gpu_status == "simulated" for n in _sims(w).values())
        assert w.source.relay_of("sim-0001") == r.node  # one stream: no link per node behind it
        # The map paints every node: a tile for each GPU of each simulated node.
        w.show_view("map")
        w.refresh_views()
        c = w.map.canvas
        assert set(_sims(w)) <= set(c.order) and c.layout_ is not None
        c.repaint()
        _x, _y, tw, th = c.layout_.tile_rect("sim-0007", 3)
        assert tw > 0 and th > 0

        # Opening a node's card follows it through the relay: its full samples drive it.
        node = w.state.nodes["sim-0007"]
        assert node.last_sample is None, "summaries carry no full sample"
        rows_before = w.state.series.nodes["sim-0007"].count
        w.show_node_card("sim-0007")
        wait_until(qtbot, lambda: node.last_sample is not None and node.inventory.agentd_version == "simulated",
                   timeout_s=20, what="the followed node's snapshot and samples")
        wait_until(qtbot, lambda: w.state.series.nodes["sim-0007"].count >= rows_before + 3, timeout_s=20,
                   what="the followed node's charts get points")
        w.show_view("map", chosen=True)  # leaving it: unfollow

        # A pause from the app goes through the relay; the owning node acknowledges it.
        def running() -> str | None:
            return next((j.id for k, n in _sims(w).items() for j in n.jobs.values() if j.state == "running"), None)
        wait_until(qtbot, lambda: running() is not None, timeout_s=30, what="a running simulated job")
        job = running()
        assert job is not None
        with qtbot.waitSignal(w.source.request_done, timeout=30000) as sig:
            w.actions.pause([job])
        assert sig.args[1] == job.rpartition(".")[0], "the reply is reported for the node, not the relay"
        assert isinstance(sig.args[2], JobReply) and sig.args[2].job.state == "paused"
        with NodeClient(r.ctl, timeout_s=30) as cl:
            shown = cl.call(Show(job=job))
        assert isinstance(shown, JobReply) and shown.job.state == "paused"
        wait_until(qtbot, lambda: w.state.job(job) is not None and w.state.job(job).state == "paused", timeout_s=20,
                   what="the app's state shows the job paused")


def test_two_relays_over_the_same_nodes_fail_over(qtbot, tmp_path: Path, open_window) -> None:
    with sim_fleet(tmp_path, 20) as cluster, relay(tmp_path, cluster, name="relay-a") as ra, \
            relay(tmp_path, cluster, name="relay-b") as rb:
        wait_nodes(ra, 21, timeout_s=90)
        wait_nodes(rb, 21, timeout_s=90)
        w = open_window(ra, rb)
        wait_until(qtbot, lambda: len(_sims(w)) == 20 and all(n.link == "live" and n.derived is not None
                                                              for n in _sims(w).values()),
                   timeout_s=60, what="20 simulated nodes live")
        assert len(w.state.nodes) == 22, "two relays over the same nodes: no node twice"
        serving = {w.source.relay_of(k) for k in _sims(w)}
        assert len(serving) == 1
        dead = ra if serving == {ra.node} else rb
        alive = rb if dead is ra else ra
        dead.proc.kill()
        dead.proc.wait(10)
        wait_until(qtbot, lambda: all(w.source.relay_of(k) == alive.node for k in _sims(w)), timeout_s=20,
                   what=f"every node served through {alive.node}")
        assert any("now through relay" in e.message and alive.node in e.message for e in w.state.events)
        # ... and the numbers keep coming through the other relay.
        stamp = {k: n.derived.wall_s for k, n in _sims(w).items()}
        wait_until(qtbot, lambda: all(n.derived.wall_s > stamp[k] and n.link == "live" for k, n in _sims(w).items()),
                   timeout_s=20, what="fresh summaries of all 20 nodes after the failover")
        assert len(w.state.nodes) == 22


def test_a_big_relay_is_taken_in_summary_phases(qtbot, tmp_path: Path, open_window, monkeypatch) -> None:
    """Past SUMMARY_RATE_MAX nodes the app takes some of a relay's summary phases: each node
    every few seconds, its work per second bounded (here the limit is 2 a second: one phase of 10)."""
    monkeypatch.setattr(relay_protocol, "SUMMARY_RATE_MAX", 2)
    with sim_fleet(tmp_path, 20) as cluster, relay(tmp_path, cluster, interval=0.2) as r:
        wait_nodes(r, 21, timeout_s=90)
        applied: list[str] = []
        w = open_window(r)
        w.source.summaries.connect(lambda batch: applied.extend(s.node for s in batch))
        wait_until(qtbot, lambda: len(_sims(w)) == 20 and all(n.link == "live" and n.derived is not None
                                                              for n in _sims(w).values()),
                   timeout_s=60, what="20 simulated nodes live, from the relay's nodes reply")
        wait_until(qtbot, lambda: any("every 10 s" in e.message and e.ok for e in w.state.events), timeout_s=20,
                   what="a notice of the summaries' pace")
        # Every node still moves on, at a tenth of the rate: 20 nodes x 5 ticks a second would
        # be ~100 summaries a second taken whole.
        stamp = {k: n.derived.wall_s for k, n in _sims(w).items()}
        applied.clear()
        t0 = time.monotonic()
        wait_until(qtbot, lambda: all(n.derived.wall_s > stamp[k] for k, n in _sims(w).items()), timeout_s=30,
                   what="fresh summaries of all 20 nodes")
        qtbot.wait(4000)
        per_s = len([x for x in applied if x.startswith("sim-")]) / (time.monotonic() - t0)
        assert 0 < per_s < 40, per_s
        # ... and no failover or silence note: the relay's own samples show it is alive.
        assert not [e for e in w.state.events if not e.ok and "relay" in e.message], \
            [e.message for e in w.state.events if not e.ok]
        assert all(n.link == "live" for n in _sims(w).values())


def test_cluster_file_lists_two_relays(tmp_path: Path) -> None:
    from gui.cluster_file import ClusterFileError, load_cluster

    f = tmp_path / "c.toml"
    f.write_text('relays = ["tcp://r1:7710", "tcp://r2:7710"]\n')
    assert [(a.key, a.endpoint) for a in load_cluster(f)] == [("relay r1:7710", "tcp://r1:7710"),
                                                              ("relay r2:7710", "tcp://r2:7710")]
    f.write_text('relays = ["r1:7710"]\n')
    with pytest.raises(ClusterFileError, match="relays must be a list of endpoints"):
        load_cluster(f)
