"""Fleets of simulated nodes and relays as real processes, stopped by pid."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentd.protocol.relay import Nodes, NodesReply, NodeSummary
from agentd.transport.client import ClientError, NodeClient
from tests.agentd_proc import REPO, AgentdProc, start_agentd


@contextmanager
def sim_fleet(tmp_path: Path, k: int, *, prefix: str = "sim", extra: list[str] | None = None) -> Iterator[Path]:
    """``python -m agentd.simulate K`` in its own process; yields its cluster file."""
    cluster = tmp_path / f"{prefix}-cluster.toml"
    err = open(tmp_path / f"{prefix}-sim.stderr", "wb")  # noqa: SIM115  (closed in finally, past the yield)
    proc = subprocess.Popen([sys.executable, "-m", "agentd.simulate", str(k), "--cluster-out", str(cluster),
                             "--prefix", prefix, "--gpus", "4", *(extra or [])],
                            stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not cluster.exists():
            assert proc.poll() is None, f"simulator exited: {(tmp_path / f'{prefix}-sim.stderr').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "simulator wrote no cluster file within 60 s"
            time.sleep(0.05)
        yield cluster
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        err.close()


@contextmanager
def relay(tmp_path: Path, cluster: Path, name: str = "relay", interval: float = 1.0) -> Iterator[AgentdProc]:
    r = start_agentd(tmp_path, node=name, simulate_gpus=1, interval=interval, extra=["--relay", str(cluster)])
    try:
        yield r
    finally:
        # The relay runs no jobs of its own; cancelling "all jobs" through it would cancel the
        # simulated fleet's rows, and wait out every dead node's timeout.
        r.stop(cancel_jobs=False)


def wait_nodes(r: AgentdProc, want: int, timeout_s: float = 60.0, live: bool = True) -> list[NodeSummary]:
    """Poll ``nodes`` on a relay until it serves ``want`` nodes (live ones with ``live``)."""
    deadline = time.monotonic() + timeout_s
    got: list[NodeSummary] = []
    with NodeClient(r.ctl, timeout_s=10) as c:
        while time.monotonic() < deadline:
            try:
                reply = c.call(Nodes())
            except ClientError:
                time.sleep(0.2)
                continue
            assert isinstance(reply, NodesReply)
            got = [n for n in reply.nodes if n.link == "live" or not live]
            if len(got) >= want:
                return got
            time.sleep(0.3)
    raise AssertionError(f"relay {r.node} serves {len(got)} {'live ' if live else ''}nodes after {timeout_s} s, want {want}")
