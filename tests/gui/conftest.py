"""Fixtures for the app tests: temp QSettings, a window on a LiveSource, thread checks."""

from __future__ import annotations

import sys
import threading
import time

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

from agentd.protocol.jobs import JobSpec
from agentd.protocol.messages import Submit
from tests.waiting import wait_for

BUSY_LOOP = "import time\nwhile True:\n    sum(range(20000)); time.sleep(0.001)\n"


@pytest.fixture
def settings(tmp_path):
    from PySide6.QtCore import QSettings

    s = QSettings(str(tmp_path / "settings" / "fleetdeck.ini"), QSettings.Format.IniFormat)
    s.setValue("ui/failure_popups", False)
    return s


def wait_until(qtbot, cond, timeout_s: float = 15.0, what: str = "condition"):
    """Process Qt events until ``cond()`` is truthy; fail naming ``what``."""
    return wait_for(cond, timeout_s, what, poll_s=0.05, sleep=lambda s: qtbot.wait(int(s * 1000)))


_SUBMITTED: list[tuple[object, str, list[int]]] = []


def submit(proc, name: str = "busy", gpus: int = 0, priority: int = 0) -> str:
    """Submit a CPU busy loop; the ``cleanup_jobs`` fixture ends it after the test."""
    with proc.client(timeout_s=10.0) as c:
        reply = c.call(Submit(spec=JobSpec(argv=[sys.executable, "-c", BUSY_LOOP], name=name, gpus=gpus, priority=priority)))
    _SUBMITTED.append((proc, reply.job.id, []))
    return reply.job.id


def _cancel_submitted(proc) -> None:
    """agentd never kills jobs when it stops (a restarted daemon re-adopts them), so cancel what
    a test submitted while its daemon still runs, and wait until they ended."""
    from agentd.protocol.messages import Cancel, Jobs, Show
    from agentd.transport.client import ClientError

    mine = [j for p, j, _ in _SUBMITTED if p is proc]
    if not mine or proc.proc is None or proc.proc.poll() is not None:
        return
    try:
        with proc.client(timeout_s=5.0) as c:
            for job_id in mine:
                if c.call(Show(job=job_id)).job.state not in ("succeeded", "failed", "cancelled", "migrated"):
                    c.call(Cancel(job=job_id, grace_s=0.5), timeout_s=10.0)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(j.id in mine for j in c.call(Jobs(active_only=True)).jobs):
                time.sleep(0.1)
    except ClientError:
        pass


@pytest.fixture
def agentd(tmp_path):
    """The suite's agentd fixture, plus: jobs submitted with :func:`submit` are cancelled first."""
    from tests.agentd_proc import start_agentd

    proc = start_agentd(tmp_path, node="n1", simulate_gpus=2)
    yield proc
    _cancel_submitted(proc)
    proc.stop()


@pytest.fixture
def agentd_factory(tmp_path):
    from tests.agentd_proc import start_agentd

    started = []

    def make(node: str = "n1", **kw):
        p = start_agentd(tmp_path, node=node, **kw)
        started.append(p)
        return p

    yield make
    for p in started:
        _cancel_submitted(p)
        p.stop()
    _SUBMITTED.clear()


@pytest.fixture
def open_window(qtbot, settings):
    """Factory: a started MainWindow following the given AgentdProcs. Closed afterwards, and
    no thread the window started may be left running."""
    from gui.main_window import MainWindow
    from gui.sources.base import NodeAddress
    from gui.sources.live import LiveSource

    before = set(threading.enumerate())
    windows = []
    confirmations: list[tuple[str, str, str]] = []

    def make(*procs, confirm_answer: bool = True):
        source = LiveSource([NodeAddress(key=p.node, endpoint=p.ctl) for p in procs])

        def confirm(title, text, detail):
            confirmations.append((title, text, detail))
            return confirm_answer

        w = MainWindow(source, settings, confirm=confirm)
        w.confirmations = confirmations
        qtbot.addWidget(w)
        w.start()
        w.show()
        windows.append(w)
        return w

    yield make
    for w in windows:
        w.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        # A _DummyThread is Python's record of a foreign (Qt) thread that once called into
        # threading (logging does); it never "ends" in Python's view. QThreads are checked below.
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()
                 and not isinstance(t, threading._DummyThread)]
        if not extra:
            break
        time.sleep(0.05)
    assert not extra, f"threads left running after the window closed: {extra}"
    from gui.sources import live
    assert not [z for z in live._zombies if z.isRunning()], "a network thread did not stop"
