"""Start examples/ring_trainer.py ranks as plain subprocesses with torchrun's environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.agentd_proc import free_port

RING = Path(__file__).resolve().parents[2] / "examples" / "ring_trainer.py"


@dataclass
class Ring:
    """The ranks of one ring; stdout/stderr of rank r in ``out(r)`` / ``err(r)``."""

    logs: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def out(self, rank: int) -> str:
        return (self.logs / f"rank{rank}.out").read_text()

    def err(self, rank: int) -> str:
        return (self.logs / f"rank{rank}.err").read_text()

    def wait_all(self, timeout_s: float) -> list[int]:
        """Exit codes of every rank; fails (after killing them) if one is still running at the deadline."""
        deadline = time.monotonic() + timeout_s
        codes = []
        for r, p in enumerate(self.procs):
            try:
                codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"rank {r} still running after {timeout_s} s; stderr: {self.err(r)[-2000:]}") from None
        return codes

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()


def start_ring(world: int, args: list[str], logs: Path, env: dict[str, str] | None = None) -> Ring:
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    ring = Ring(logs)
    for r in range(world):
        rank_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1",
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
                    "RANK": str(r), "LOCAL_RANK": str(r), "LOCAL_WORLD_SIZE": str(world), "NODE_RANK": "0",
                    **(env or {})}
        with open(logs / f"rank{r}.out", "wb") as out, open(logs / f"rank{r}.err", "wb") as err:
            ring.procs.append(subprocess.Popen([sys.executable, str(RING), *args], env=rank_env, stdout=out,
                                               stderr=err, cwd=logs))
    return ring


def last_step(text: str) -> int:
    steps = [int(part.split("=")[1]) for line in text.splitlines() if line.startswith("AGENTD_METRIC")
             for part in line.split() if part.startswith("step=")]
    return max(steps, default=0)
