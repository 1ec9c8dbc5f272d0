"""Fixtures for job control tests: a started JobManager on a private node name, cleaned up after."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentd.control.manager import JobManager
from tests.control.control_helpers import Recorder, cleanup_manager, node_name


@pytest.fixture
def make_manager(tmp_path: Path) -> Iterator[Callable[..., tuple[JobManager, Recorder]]]:
    made: list[JobManager] = []

    def make(gpus: int = 2, node: str | None = None, state_dir: Path | None = None, **kw) -> tuple[JobManager, Recorder]:
        rec = Recorder()
        m = JobManager(node or node_name(), state_dir or tmp_path / f"state{len(made)}", gpus,
                       on_event=rec.on_event, on_job=rec.on_job, **kw)
        m.start()
        made.append(m)
        return m, rec

    yield make
    for m in reversed(made):  # the newest owns the jobs a closed predecessor left running
        cleanup_manager(m)
    for m in made:
        if m.layout is not None:
            for base in m.layout.bases.values():
                assert not base.exists(), f"cgroup {base} left behind"


@pytest.fixture
def manager(make_manager) -> tuple[JobManager, Recorder]:
    return make_manager()
