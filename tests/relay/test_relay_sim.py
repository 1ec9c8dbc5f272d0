"""A real relay (agentd --relay) following a fleet of simulated nodes on real sockets."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from agentd.protocol.codec import decode_stream
from agentd.protocol.messages import JobReply, Jobs, JobsReply, Pause, Show
from agentd.protocol.relay import (
    Follow,
    FollowReply,
    RelayedMsg,
    SummaryMsg,
    detail_topic,
)
from agentd.transport.client import NodeClient, RemoteError
from tests.agentd_proc import REPO
from tests.relay.relay_helpers import relay, sim_fleet, wait_nodes


def _agentctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentd.cli", *args], capture_output=True, text=True, check=False, timeout=timeout, cwd=REPO)


def _running_job(r_ctl: str) -> str:
    with NodeClient(r_ctl, timeout_s=30) as c:
        reply = c.call(Jobs(active_only=True))
    assert isinstance(reply, JobsReply)
    running = [j for j in reply.jobs if j.state == "running" and j.node.startswith("sim-")]
    assert running, "no simulated job is running anywhere in the fleet"
    return running[0].id


def test_relay_serves_200_simulated_nodes_and_forwards_a_pause(tmp_path: Path) -> None:
    with sim_fleet(tmp_path, 200) as cluster, relay(tmp_path, cluster) as r:
        nodes = wait_nodes(r, 201, timeout_s=90)
        names = {n.node for n in nodes}
        assert {f"sim-{i:04d}" for i in range(1, 201)} <= names and r.node in names
        sims = [n for n in nodes if n.node.startswith("sim-")]
        assert all(n.simulated for n in sims), "every simulated node is labelled simulated"
        assert all(len(n.gpus) == 4 for n in sims if n.cpu_pct is not None)

        # The CLI pointed at the relay lists every node behind it.
        out = _agentctl("--node", r.ctl, "nodes", "--json", "--timeout", "30")
        assert out.returncode == 0, out.stderr
        listed = json.loads(out.stdout)
        assert len({row["name"] for row in listed}) >= 201

        # A pause by job id alone goes through the relay and the node that owns the job answers.
        job_id = _running_job(r.ctl)
        out = _agentctl("--node", r.ctl, "pause", job_id, "--json", "--timeout", "30")
        assert out.returncode == 0, out.stderr
        with NodeClient(r.ctl, timeout_s=30) as c:
            shown = c.call(Show(job=job_id))
        assert isinstance(shown, JobReply) and shown.job.state == "paused" and shown.job.node == job_id.rpartition(".")[0]
        # ... and the node itself says so (not a copy the relay made up).
        direct = next(n for n in nodes if n.node == shown.job.node)
        with NodeClient(direct.endpoint, timeout_s=10) as c:
            own = c.call(Show(job=job_id))
        assert isinstance(own, JobReply) and own.job.state == "paused"
        # Following 200 nodes grows the relay's memory: its own, never read as a flood of requests
        # (the flood guard would cut every client of the relay).
        assert "cutting every client connection" not in r.stderr()


def test_detail_on_demand_and_relay_of_relays(tmp_path: Path) -> None:
    """Two child relays of 30 simulated nodes each, one parent relay following both: the parent
    serves all 60 + the children, routes a pause two levels down, and a followed node's detail
    crosses both relays with the node's own seq."""
    with sim_fleet(tmp_path, 30, prefix="sa") as ca, sim_fleet(tmp_path, 30, prefix="sb") as cb, \
            relay(tmp_path, ca, "child-a") as ra, relay(tmp_path, cb, "child-b") as rb:
        top = tmp_path / "top.toml"
        top.write_text(f'[[node]]\nname = "child-a"\nendpoint = "{ra.ctl}"\n\n[[node]]\nname = "child-b"\nendpoint = "{rb.ctl}"\n')
        with relay(tmp_path, top, "top") as rt:
            nodes = wait_nodes(rt, 63, timeout_s=90)
            by_name = {n.node: n for n in nodes}
            assert by_name["sa-0007"].via == ["child-a"] and by_name["sb-0030"].via == ["child-b"]

            with NodeClient(rt.ctl, timeout_s=30) as c:
                reply = c.call(Jobs(active_only=True))
                assert isinstance(reply, JobsReply)
                deep = next(j for j in reply.jobs if j.state == "running" and j.node.startswith("sb-"))
                paused = c.call(Pause(job=deep.id))
                assert isinstance(paused, JobReply) and paused.job.state == "paused" and paused.job.node == deep.node

            # Detail on demand: subscribe to the node's topic, follow, get its own stream.
            with NodeClient(rt.ctl, timeout_s=30) as c:
                pub = c.hello().pub_endpoint
            ctx = zmq.Context()
            sub = ctx.socket(zmq.SUB)
            try:
                sub.setsockopt(zmq.LINGER, 0)
                for t in (detail_topic("sa-0003"), b"nsum"):
                    sub.setsockopt(zmq.SUBSCRIBE, t)
                sub.connect(pub)
                time.sleep(0.3)  # the subscription reaches the relay before the follow
                with NodeClient(rt.ctl, timeout_s=30) as c:
                    fol = c.call(Follow(node="sa-0003"))
                assert isinstance(fol, FollowReply) and fol.snapshot.inventory.node == "sa-0003"
                assert fol.topic == detail_topic("sa-0003")
                inner: list[int] = []
                summaries = 0
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and (len(inner) < 3 or not summaries):
                    if not sub.poll(200):
                        continue
                    topic, body = sub.recv_multipart()
                    msg = decode_stream(body)
                    if isinstance(msg, RelayedMsg):
                        assert topic == detail_topic("sa-0003") and msg.origin == "sa-0003"
                        inner.append(decode_stream(msg.body).seq)
                    elif isinstance(msg, SummaryMsg):
                        summaries += 1
                        assert all(n.node != "sa-0003" or n.via == ["child-a"] for n in msg.nodes)
                assert len(inner) >= 3, "the followed node's detail did not cross two relays"
                assert inner == sorted(inner), "the node's own seq arrives in order"
                assert summaries
            finally:
                sub.close(linger=0)
                ctx.term()


def test_follow_of_an_unknown_node_is_refused_by_name(tmp_path: Path) -> None:
    with sim_fleet(tmp_path, 3) as cluster, relay(tmp_path, cluster) as r:
        wait_nodes(r, 4)
        with NodeClient(r.ctl, timeout_s=10) as c, pytest.raises(RemoteError) as err:
            c.call(Follow(node="nowhere-1"))
        assert err.value.code == 404 and "nowhere-1" in err.value.message
