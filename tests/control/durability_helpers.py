"""Helpers for the durability tests: a real agentd restarted on the same state dir, killed by pid."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from agentd.protocol import TERMINAL_STATES, JobInfo, JobSpec
from agentd.protocol.messages import Cancel, Jobs, Submit
from tests.agentd_proc import AgentdProc, free_port
from tests.control.control_helpers import wait_for as wait_until  # noqa: F401 - the tests import it from here


def daemon(state_dir: Path, node: str = "n1", gpus: int = 2, interval: float = 0.5) -> AgentdProc:
    """An agentd (not started) on free loopback ports with the given state dir."""
    ctl, pub = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    args = ["--state-dir", str(state_dir), "--ctl", ctl, "--pub", pub, "--node-name", node,
            "--interval", str(interval), "--simulate-gpus", str(gpus), "--slurm", "off"]
    return AgentdProc(node, state_dir, ctl, pub, args)


def jobs(proc: AgentdProc) -> dict[str, JobInfo]:
    with proc.client(timeout_s=10) as c:
        return {j.id: j for j in c.call(Jobs()).jobs}


def submit(proc: AgentdProc, argv: list[str], **kw) -> JobInfo:
    with proc.client(timeout_s=15) as c:
        return c.call(Submit(spec=JobSpec(argv=argv, **kw))).job


def cancel_everything(proc: AgentdProc) -> None:
    with proc.client(timeout_s=15) as c:
        for j in c.call(Jobs()).jobs:
            if j.state not in TERMINAL_STATES:
                with contextlib.suppress(Exception):
                    c.call(Cancel(job=j.id, grace_s=0.5), timeout_s=20)


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running(proc: AgentdProc) -> Iterator[AgentdProc]:
    """Start ``proc``; at the end cancel its jobs and stop it (SIGTERM, by pid)."""
    proc.start()
    try:
        yield proc
    finally:
        proc.stop(cancel_jobs=True)
