"""Suite-wide settings: Qt offscreen, and no test may leave a process behind."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

from tests.agentd_proc import AgentdProc, start_agentd


@pytest.fixture
def agentd(tmp_path):
    """One real agentd with 2 simulated GPUs on free loopback ports; stopped afterwards."""
    proc = start_agentd(tmp_path, node="n1", simulate_gpus=2)
    yield proc
    proc.stop()


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
