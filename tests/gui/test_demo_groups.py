"""The demo runs a gang (a ring trainer over two nodes) and an async-RL-shaped group (trainer +
rollout roles over three), submitted through the real gang path (agentctl submit --nodes/--role)."""

from __future__ import annotations

import pytest

from agentd.protocol.messages import Jobs
from agentd.transport.client import NodeClient
from gui.local_agents import LocalAgents, demo_groups, run_group_submits
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(150)


def test_demo_groups_start_on_the_demo_nodes(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    agents = LocalAgents()
    try:
        started = [agents.start(f"dg-{i + 1}", simulate_gpus=2, cancel_jobs_on_stop=True) for i in range(3)]
        for a in started:
            agents.wait_ready(a)
        cluster_file = agents.write_cluster_file(tmp_path)
        cmds = demo_groups(cluster_file, [a.name for a in started])
        assert len(cmds) == 2
        assert run_group_submits(cmds) == []

        def running_ranks() -> dict[str, list[tuple[str, str]]]:
            by_group: dict[str, list[tuple[str, str]]] = {}
            for a in started:
                with NodeClient(a.ctl, timeout_s=10) as c:
                    for j in c.call(Jobs(active_only=True)).jobs:
                        if j.spec.group is not None and j.state == "running":
                            by_group.setdefault(j.name.rsplit("-r", 1)[0], []).append((j.node, j.spec.group.role))
            return by_group

        groups = wait_for(lambda: (g := running_ranks()) and len(g.get("ring", [])) == 2
                          and len(g.get("async-rl", [])) == 3 and g, timeout_s=90, what="both demo groups running")
        assert sorted(n for n, _ in groups["ring"]) == ["dg-1", "dg-2"]
        assert sorted(groups["async-rl"]) == [("dg-1", "trainer"), ("dg-2", "rollout"), ("dg-3", "rollout")]
    finally:
        agents.stop_all()
