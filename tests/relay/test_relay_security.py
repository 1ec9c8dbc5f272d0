"""Roles hold end to end through a relay: a client gets no more than both hops allow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agentd.protocol.messages import Jobs, JobsReply
from agentd.transport.client import NodeClient
from tests.relay.relay_helpers import relay, sim_fleet, wait_nodes

UNMAPPED_UID = 54329  # no passwd entry: agentd makes such a local caller a viewer


def _a_running_job(ctl: str) -> str:
    with NodeClient(ctl, timeout_s=30) as c:
        reply = c.call(Jobs(active_only=True))
    assert isinstance(reply, JobsReply)
    return next(j.id for j in reply.jobs if j.state == "running" and j.node.startswith("sim-"))


def _pause_as(uid: int | None, ctl: str, job: str, python: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python or sys.executable), "-m", "agentd.cli", "--node", ctl, "pause", job, "--timeout", "30"],
                          capture_output=True, text=True, check=False, timeout=60, cwd="/", user=uid, env={"PATH": "/usr/bin:/bin"})


def test_relay_never_gives_more_than_its_own_role_at_the_node(tmp_path: Path) -> None:
    """The nodes authorise the relay as a viewer: even an admin of the relay cannot pause
    through it, and the refusal says why and what to change."""
    with sim_fleet(tmp_path, 4, extra=["--role", "viewer"]) as cluster, relay(tmp_path, cluster) as r:
        nodes = wait_nodes(r, 5)
        assert all(n.relay_role == "viewer" for n in nodes if n.node.startswith("sim-"))
        job = _a_running_job(r.ctl)
        out = _pause_as(None, r.ctl, job)  # root here: admin at the relay
        assert out.returncode == 1, out
        assert "holds role viewer" in out.stderr and "authorise the relay" in out.stderr
        with NodeClient(r.ctl, timeout_s=10) as c:
            assert c.hello().role == "admin"


def test_a_viewer_at_the_relay_cannot_pause_through_it(tmp_path: Path, user_python: Path) -> None:
    """The nodes give the relay operator; a caller the relay makes a viewer stays a viewer."""
    with sim_fleet(tmp_path, 4) as cluster, relay(tmp_path, cluster) as r:
        wait_nodes(r, 5)
        job = _a_running_job(r.ctl)
        out = _pause_as(UNMAPPED_UID, r.ctl, job, user_python)
        assert out.returncode == 1, out
        assert "needs user" in out.stderr or "needs role user" in out.stderr, out.stderr
        with NodeClient(r.ctl, timeout_s=10) as c:
            still = c.call(Jobs(active_only=True))
        assert isinstance(still, JobsReply)
        assert next(j for j in still.jobs if j.id == job).state == "running"
        # The same pause by an admin of the relay goes through: the refusal was about the role.
        assert _pause_as(None, r.ctl, job).returncode == 0
