"""Alerts across a relay: the nodes' own alerts in their summaries and in the relay's `alerts`
answer, and node_stale fired by the relay when a followed node dies (real processes, sockets)."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import zmq

from agentd.clusterfile import dump_cluster, load_cluster
from agentd.protocol.alerts import alert_from_data
from agentd.protocol.codec import decode_stream
from agentd.protocol.messages import Alerts, AlertsReply, EventMsg
from agentd.protocol.relay import Nodes, NodesReply
from agentd.transport.client import NodeClient
from tests.agentd_proc import REPO
from tests.relay.relay_helpers import relay, sim_fleet, wait_nodes
from tests.waiting import wait_for


def _agentctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentd.cli", *args], capture_output=True, text=True, check=False,
                          timeout=timeout, cwd=REPO)


def _relay_alerts(ctl: str) -> list[dict[str, object]]:
    out = _agentctl("--node", ctl, "alerts", "--json", "--timeout", "20")
    assert out.returncode == 0, out.stderr
    rows: list[dict[str, object]] = json.loads(out.stdout)
    return rows


def test_alerts_cross_the_relay_and_a_dead_node_goes_stale(tmp_path: Path) -> None:
    with ExitStack() as stack:
        # Every node of fleet "sa" throttles a GPU at once (a simulated gpu_throttle alert);
        # fleet "sb" is quiet, and is killed below.
        ca = stack.enter_context(sim_fleet(tmp_path, 3, prefix="sa", extra=["--alert-rate", "1"]))
        dying = sim_fleet(tmp_path, 1, prefix="sb", extra=["--alert-rate", "0"])
        cb = dying.__enter__()
        both = tmp_path / "both.toml"
        both.write_text(dump_cluster([*load_cluster(ca).node, *load_cluster(cb).node]))
        r = stack.enter_context(relay(tmp_path, both))
        wait_nodes(r, 5)
        with NodeClient(r.ctl, timeout_s=10) as c:
            pub = c.hello().pub_endpoint

        # The nodes' own alerts: in their summaries, and in `agentctl --node RELAY alerts`.
        def sa_alerts() -> list[dict[str, object]]:
            rows = _relay_alerts(r.ctl)
            return [a for a in rows if a["rule"] == "gpu_throttle" and str(a["node"]).startswith("sa-")]

        got = wait_for(lambda: len({a["node"] for a in sa_alerts()}) == 3 and sa_alerts(), 30,
                       "gpu_throttle alerts of all three sa nodes at the relay")
        assert all("simulated" in str(a["message"]) for a in got)
        with NodeClient(r.ctl, timeout_s=10) as c:
            reply = c.call(Nodes())
        assert isinstance(reply, NodesReply)
        by_node = {n.node: n for n in reply.nodes}
        assert any(a.rule == "gpu_throttle" for a in by_node["sa-0001"].alerts)
        assert not by_node["sb-0001"].alerts

        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        stack.callback(ctx.term)
        stack.callback(sub.close, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"event")
        sub.connect(pub)

        # The quiet fleet dies: the relay fires node_stale, as an event on its own stream ...
        dying.__exit__(None, None, None)
        fired = False
        deadline_polls = 300  # 300 x 100 ms
        while not fired and deadline_polls:
            deadline_polls -= 1
            if not sub.poll(100):
                continue
            msg = decode_stream(sub.recv_multipart()[1])
            if isinstance(msg, EventMsg) and msg.event.kind == "alert":
                parsed = alert_from_data(msg.event.data)
                fired = parsed is not None and parsed[0].rule == "node_stale" and parsed[0].node == "sb-0001" \
                    and parsed[1] == "firing" and msg.node == r.node
        assert fired, "no node_stale event for sb-0001 on the relay's stream within 30 s"
        # ... in its `alerts` answer (with the live nodes' alerts), and in the node's summary.
        with NodeClient(r.ctl, timeout_s=10) as c:
            answered = c.call(Alerts())
            nodes = c.call(Nodes())
        assert isinstance(answered, AlertsReply) and isinstance(nodes, NodesReply)
        rules = {(a.rule, a.node) for a in answered.alerts}
        assert ("node_stale", "sb-0001") in rules and ("gpu_throttle", "sa-0002") in rules
        assert not any(a.rule == "node_stale" and a.node.startswith("sa-") for a in answered.alerts)
        stale = next(n for n in nodes.nodes if n.node == "sb-0001")
        assert [a.rule for a in stale.alerts] == ["node_stale"] and stale.alerts[0].severity == "critical"
        rows = _relay_alerts(r.ctl)
        assert rows[0]["rule"] == "node_stale" and rows[0]["node"] == "sb-0001", "critical first"
