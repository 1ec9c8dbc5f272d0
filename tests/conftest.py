"""Suite-wide settings: Qt offscreen, and no test may leave a process behind."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _become_subreaper() -> None:
    """Job shims outlive a SIGKILLed agentd; as their subreaper the test process collects
    them (pid 1 in some containers never does, leaving zombies)."""
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


_become_subreaper()

import pytest

from tests.agentd_proc import AgentdProc, start_agentd


@pytest.fixture
def agentd(tmp_path):
    """One real agentd with 2 simulated GPUs on free loopback ports; stopped afterwards."""
    proc = start_agentd(tmp_path, node="n1", simulate_gpus=2)
    yield proc
    proc.stop()
    _reap()


@pytest.fixture
def agentd_factory(tmp_path):
    """Start several agentd processes; all are stopped (by pid) at the end of the test."""
    started: list[AgentdProc] = []

    def make(node: str = "n1", **kw) -> AgentdProc:
        p = start_agentd(tmp_path, node=node, **kw)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()
    _reap()


def _reap() -> None:
    """Collect exited orphans (shims of jobs) that were re-parented to this process."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
