"""Hostile clients against a real agentd: raw sockets, RSS measured, results tabled.

Each attack test records ``attack -> result -> RSS growth`` with :func:`record`; the session
prints the table at the end (``pytest -s tests/security``) in the form docs/security.md keeps
under "## Hostile clients".
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import msgspec
import pytest
import zmq

from tests.agentd_proc import AgentdProc, reap_orphans, start_agentd

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


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001
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
    """SIGKILL the process group of every job the daemon's store knows (jobs outlive agentd)."""
    import sqlite3

    db = proc.state_dir / "jobs.db"
    if not db.exists():
        return
    try:
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT info FROM jobs").fetchall()
    except sqlite3.Error:
        return
    for (info,) in rows:
        data = msgspec.json.decode(info)
        for pid in [data.get("pid"), *data.get("pids", [])]:
            if pid:
                for kill in (os.killpg, os.kill):
                    try:
                        kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass


def wait_for(pred, timeout_s: float, what: str, step_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
