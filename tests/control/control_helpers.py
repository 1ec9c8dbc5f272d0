"""Helpers shared by the job control tests (imported by name: tests/control is on sys.path)."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable

from agentd.control.cgroups import remove_layout
from agentd.control.manager import JobManager
from agentd.protocol import TERMINAL_STATES, Event, JobInfo, JobSpec
from tests.waiting import wait_for  # noqa: F401 - the tests import it from here

PY = sys.executable
SPIN = [PY, "-c", "while True: pass"]
SLEEPER = [PY, "-c", "import time\nwhile True: time.sleep(0.05)"]
_names = itertools.count(1)


def node_name() -> str:
    return f"t{os.getpid()}x{next(_names)}"


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.jobs: list[JobInfo] = []

    def on_event(self, e: Event) -> None:
        self.events.append(e)

    def on_job(self, j: JobInfo) -> None:
        self.jobs.append(j)


def cleanup_manager(m: JobManager) -> None:
    """Cancel every job left, close, and remove the node's cgroup subtree."""
    if not m.is_open:
        if m.layout is not None:
            remove_layout(m.layout)
        return
    for info in m.jobs(active_only=True):
        try:
            m.cancel(info.id, grace_s=0.0, actor="cleanup")
        except Exception:  # noqa: BLE001 - cleanup must go on
            pass
    m.close()
    if m.layout is not None:
        remove_layout(m.layout)


def spec(argv: list[str] | None = None, **kw) -> JobSpec:
    return JobSpec(argv=argv or SLEEPER, **kw)


def finished(m: JobManager, job_id: str) -> Callable[[], bool]:
    def check() -> bool:
        m.tick()
        return m.get(job_id).state in TERMINAL_STATES
    return check
