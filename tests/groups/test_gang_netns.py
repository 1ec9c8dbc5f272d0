"""A gang across two hosts (network namespaces on a veth pair) whose daemons listen with CURVE,
as on a real cluster: the leader reaches the other node's daemon with the key the submitter gave
(``GroupMember.node_keys``) and its own client key (authorised there as a peer daemon), the
ranks all-reduce across the hosts, the leader's radar follows both nodes over CURVE, and a group
pause reaches every rank."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.agentd_proc import REPO, reap_orphans
from tests.groups.gang_helpers import FAST, RING
from tests.netns_hosts import NsDaemon, two_hosts
from tests.waiting import wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2")]


def _ctl(d: NsDaemon, cluster: Path, keys: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """agentctl run on host ``d`` (inside its namespace) with the operator's keys."""
    return subprocess.run(["ip", "netns", "exec", d.ns, sys.executable, "-m", "agentd.cli", "--cluster", str(cluster),
                           "--timeout", "10", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO), "FLEETDECK_KEYS_DIR": str(keys)})


def _group(d: NsDaemon, cluster: Path, keys: Path, gid: str) -> dict[str, Any] | None:
    out = _ctl(d, cluster, keys, "--json", "jobs")
    if out.returncode != 0:
        return None
    return next((r for r in json.loads(out.stdout) if r.get("kind") == "group" and r["id"] == gid), None)


def test_a_gang_spans_two_hosts_whose_daemons_use_curve(netns, tmp_path):
    keys, a, b = two_hosts(tmp_path)
    a.authorize_daemon(b)
    b.authorize_daemon(a)
    cluster = tmp_path / "cluster.toml"
    cluster.write_text("".join(f'[[node]]\nname = "{d.node}"\nendpoint = "{d.ctl}"\nserver_key = "{d.keys / "server.key"}"\n\n'
                               for d in (a, b)))
    try:
        a.start()
        b.start()
        out = _ctl(a, cluster, keys, "submit", "--nodes", "a,b", "--name", "ring", "--", sys.executable, str(RING),
                   *FAST, "--steps", "1000000", "--out", str(tmp_path / "final-{rank}.json"))
        assert out.returncode == 0, out.stderr
        gid = out.stdout.split()[0]
        # Started at all: the leader (a) reserved and started the rank on b over CURVE.
        row = wait_for(lambda: (lambda r: r if r and r["state"] == "running" and len(r["rank_jobs"]) == 2 else None)(
            _group(a, cluster, keys, gid)), 60, f"group {gid} to run on both hosts", poll_s=0.5)
        assert sorted(r["node"] for r in row["rank_jobs"]) == ["a", "b"]
        # The ranks all-reduce across the hosts: both step on.
        wait_for(lambda: (lambda r: r and min(int(j.get("metrics", {}).get("step", 0)) for j in r["rank_jobs"]) >= 20)(
            _group(a, cluster, keys, gid)), 60, "both ranks past step 20", poll_s=0.5)
        # The leader's radar follows b's daemon over CURVE too: a rank stays "unknown" until the
        # radar has samples of its node, so both ranks judged means b's samples reach the leader.
        def judged() -> list[dict[str, Any]] | None:
            o = _ctl(a, cluster, keys, "--json", "health", gid)
            rows = json.loads(o.stdout) if o.returncode == 0 else []
            return rows if len(rows) == 2 and all(r["status"] != "unknown" for r in rows) else None
        health = wait_for(judged, 60, "the radar to judge both ranks", poll_s=1.0)
        assert sorted((r["rank"], r["node"]) for r in health) == [(0, "a"), (1, "b")]
        assert all(r["status"] in ("ok", "waiting") for r in health), health
        out = _ctl(a, cluster, keys, "pause", gid)
        assert out.returncode == 0, out.stderr
        wait_for(lambda: (lambda r: r and all(j["state"] == "paused" for j in r["rank_jobs"]))(
            _group(a, cluster, keys, gid)), 30, "every rank paused", poll_s=0.5)
        out = _ctl(a, cluster, keys, "cancel", gid)
        assert out.returncode == 0, out.stderr
    finally:
        for d in (a, b):
            d.stop()
        for p in psutil.process_iter(["cmdline"]):  # ranks outlive a stopped daemon (it adopts them on restart)
            if str(RING) in (p.info["cmdline"] or []) and any(str(tmp_path) in x for x in p.info["cmdline"]):
                p.kill()
        reap_orphans()
