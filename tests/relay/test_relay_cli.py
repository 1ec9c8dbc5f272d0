"""agentctl through a relay: submit --on NODE (with the least-role rule) and watch of every node
behind it (real relay process, simulated fleets on real sockets)."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

from agentd.clusterfile import dump_cluster, load_cluster
from agentd.protocol.messages import JobReply, Show
from agentd.transport.client import NodeClient
from tests.agentd_proc import REPO
from tests.relay.relay_helpers import relay, sim_fleet, wait_nodes


def _agentctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentd.cli", *args], capture_output=True, text=True, check=False,
                          timeout=timeout, cwd=REPO)


def test_submit_on_a_node_behind_the_relay_and_watch_them_all(tmp_path: Path) -> None:
    with ExitStack() as stack:
        ops = stack.enter_context(sim_fleet(tmp_path, 2, prefix="op"))
        views = stack.enter_context(sim_fleet(tmp_path, 2, prefix="vw", extra=["--role", "viewer"]))
        both = tmp_path / "both.toml"
        both.write_text(dump_cluster([*load_cluster(ops).node, *load_cluster(views).node]))
        r = stack.enter_context(relay(tmp_path, both))
        nodes = {n.node: n for n in wait_nodes(r, 5)}

        # No --on at a relay with nodes behind it: refused, naming the option.
        out = _agentctl("--node", r.ctl, "submit", "--", "train.py")
        assert out.returncode == 1 and "--on NODE" in out.stderr and "5 nodes" in out.stderr, out.stderr

        # --on NODE: the node behind the relay runs it, as the client (not the relay's user).
        out = _agentctl("--node", r.ctl, "submit", "--on", "op-0002", "--name", "via-relay", "--json", "--", "train.py")
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout)
        assert got["node"] == "op-0002" and got["id"].startswith("op-0002.")
        with NodeClient(nodes["op-0002"].endpoint, timeout_s=10) as c:
            own = c.call(Show(job=got["id"]))
        assert isinstance(own, JobReply) and own.job.name == "via-relay"
        assert own.job.spec.user == pwd.getpwuid(os.getuid()).pw_name

        # The least-role rule: the relay is only a viewer at vw-*, so nobody submits there through it.
        out = _agentctl("--node", r.ctl, "submit", "--on", "vw-0001", "--", "train.py")
        assert out.returncode == 1 and "role viewer" in out.stderr and "vw-0001" in out.stderr, out.stderr
        # An unknown node is refused by name.
        out = _agentctl("--node", r.ctl, "submit", "--on", "nowhere-9", "--", "train.py")
        assert out.returncode == 1 and "nowhere-9" in out.stderr, out.stderr

        # watch at the relay: every node behind it, one JSON object per node per tick.
        out = _agentctl("--node", r.ctl, "watch", "--json", "--count", "2", "--timeout", "20", timeout=90)
        assert out.returncode == 0, out.stderr
        rows = [json.loads(line) for line in out.stdout.splitlines()]
        summaries = [row for row in rows if row["type"] == "summary"]
        per_node: dict[str, int] = {}
        for row in summaries:
            assert row["relay"] == r.node and "cpu_pct" in row and "gpus" in row
            per_node[row["node"]] = per_node.get(row["node"], 0) + 1
        assert set(per_node) == {"op-0001", "op-0002", "vw-0001", "vw-0002"}
        assert min(per_node.values()) >= 2
        assert any(row["type"] == "sample" and row["node"] == r.node for row in rows), "the relay's own node too"
        out = _agentctl("--node", r.ctl, "watch", "--count", "1", "--timeout", "20", timeout=90)
        assert out.returncode == 0 and "op-0001" in out.stdout and "vw-0002" in out.stdout, out.stderr
