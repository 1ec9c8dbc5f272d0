"""Real agentd daemons on loopback, one per "node", and agentctl runs against their cluster file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.agentd_proc import REPO, AgentdProc, reap_orphans, start_agentd

RING = REPO / "examples" / "ring_trainer.py"
FAST = ["--compute-ms", "5", "--dim", "37", "--peer-timeout", "60", "--rendezvous-timeout", "60"]


class Cluster:
    """Daemons named ``names`` with ``gpus`` simulated GPUs each, and their cluster file."""

    def __init__(self, tmp: Path, names: list[str], gpus: int = 2, extra: list[str] | None = None) -> None:
        self.tmp = tmp
        self.daemons: list[AgentdProc] = []
        try:
            for n in names:
                self.daemons.append(start_agentd(tmp, n, simulate_gpus=gpus, interval=0.25, extra=extra))
        except BaseException:
            self.close()
            raise
        self.file = tmp / "cluster.toml"
        self.file.write_text("".join(f'[[node]]\nname = "{d.node}"\nendpoint = "{d.ctl}"\n\n' for d in self.daemons))

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """agentctl --cluster FILE ARGS..., as this (root) user."""
        return subprocess.run([sys.executable, "-m", "agentd.cli", "--cluster", str(self.file), *args],
                              capture_output=True, text=True, timeout=timeout, check=False,
                              env={**os.environ, "PYTHONPATH": str(REPO)})

    def ctl_json(self, *args: str, timeout: float = 60) -> Any:
        out = self.ctl("--json", *args, timeout=timeout)
        assert out.returncode == 0, f"agentctl {' '.join(args)} failed ({out.returncode}): {out.stderr}"
        return json.loads(out.stdout)

    def group(self, gid: str) -> dict[str, Any] | None:
        """The group's row of `agentctl jobs --json` (None when no rank is listed)."""
        return next((r for r in self.ctl_json("jobs") if r.get("kind") == "group" and r["id"] == gid), None)

    def close(self) -> None:
        for d in self.daemons:
            d.stop()
        reap_orphans()


def kernel_frozen(pid: int) -> bool:
    """Does the kernel report ``pid``'s cgroup frozen (v1 freezer.state, or v2 cgroup.events)?"""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "freezer":
            return (Path("/sys/fs/cgroup/freezer") / path.lstrip("/") / "freezer.state").read_text().strip() == "FROZEN"
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            events = (Path("/sys/fs/cgroup/unified") / path.lstrip("/") / "cgroup.events").read_text()
            return "frozen 1" in events.splitlines()
    raise AssertionError(f"process {pid} is in no freezer cgroup")
