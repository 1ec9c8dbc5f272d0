"""Hostile clients against a real agentd: raw sockets, RSS measured, results tabled.

Each attack test records ``attack -> result -> RSS growth`` with :func:`record`; the session
prints the table at the end (``pytest -s tests/security``) in the form docs/security.md keeps
under "## Hostile clients".
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import msgspec
import pytest
import zmq

from tests.agentd_proc import AgentdProc, reap_orphans, start_agentd
from tests.control.control_helpers import wait_for  # noqa: F401 - the tests import it from here

ROWS: list[tuple[str, str, str]] = []
RSS_LIMIT_KIB = 64 * 1024  # the bound: growth of at most 64 MiB


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def record(attack: str, result: str, rss_before_kib: int, rss_after_kib: int) -> None:
    growth = rss_after_kib - rss_before_kib
    ROWS.append((attack, result, f"{growth / 1024:+.1f} MiB"))
    assert growth <= RSS_LIMIT_KIB, f"{attack}: agentd grew by {growth} KiB"


def pytest_sessionfinish(session, exitstatus):
    if ROWS:
        print("\n| attack | result | RSS growth |\n|---|---|---|")
        for row in ROWS:
            print("| " + " | ".join(row) + " |")


class Raw:
    """A DEALER that sends arbitrary bodies (dicts are msgpack-encoded) and waits for replies."""

    def __init__(self, ctl: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(ctl)

    def send(self, body: dict | bytes | list[bytes]) -> None:
        if isinstance(body, list):
            self.sock.send_multipart(body)
        else:
            self.sock.send(body if isinstance(body, bytes) else msgspec.msgpack.encode(body))

    def recv(self, timeout_s: float = 15.0) -> dict:
        if not self.sock.poll(int(timeout_s * 1000)):
            raise AssertionError(f"no reply within {timeout_s} s")
        return msgspec.msgpack.decode(self.sock.recv())

    def call(self, body: dict, timeout_s: float = 15.0) -> dict:
        self.send({"v": 1, "id": 7, **body})
        return self.recv(timeout_s)

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


@pytest.fixture
def raw_factory():
    made: list[Raw] = []

    def make(ctl: str) -> Raw:
        r = Raw(ctl)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def hostile_agentd(tmp_path):
    """A real agentd for one attack; its jobs are killed by pid afterwards (cancel may be slow)."""
    proc = start_agentd(tmp_path, node="sec", simulate_gpus=2, interval=0.5)
    yield proc
    kill_jobs_of(proc)
    proc.stop(cancel_jobs=False)
    reap_orphans()


def kill_jobs_of(proc: AgentdProc) -> None:
    """SIGKILL every process in the daemon's job cgroups, then thaw them (a frozen process
    never acts on its SIGKILL); jobs outlive agentd by design, so the test must end them."""
    for job_dir in _job_cgroups(proc.node):
        try:
            pids = [int(p) for p in (job_dir / "cgroup.procs").read_text().split()]
        except OSError:
            continue
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for name, thawed in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            with contextlib.suppress(OSError):
                (job_dir / name).write_text(thawed)


def _job_cgroups(node: str) -> list[Path]:
    """``job-*`` dirs of the daemon named ``node`` beneath this test process's own cgroups."""
    root = Path("/sys/fs/cgroup")
    found: list[Path] = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, rel = line.split(":", 2)
        if controllers.startswith("name="):
            continue
        mounts = [root / "unified", root] if not controllers else [root / c for c in controllers.split(",")]
        for mount in mounts:
            base = mount / rel.lstrip("/") / f"agentd-{node}"
            if base.is_dir():
                found += sorted(base.glob("job-*"))
    return found
