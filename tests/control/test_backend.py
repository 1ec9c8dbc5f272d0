"""Both job backends implement the JobBackend protocol the daemon dispatches to."""

from __future__ import annotations

import inspect

from agentd.control.backend import JobBackend
from agentd.control.manager import JobManager
from agentd.control.slurm import SlurmBackend


def test_local_manager_and_slurm_backend_are_job_backends(manager) -> None:
    m, _ = manager
    assert isinstance(m, JobBackend)
    for cls in (JobManager, SlurmBackend):
        for name, proto in inspect.getmembers(JobBackend, inspect.isfunction):
            if name.startswith("_"):
                continue
            impl = getattr(cls, name)
            assert list(inspect.signature(impl).parameters) == list(inspect.signature(proto).parameters), \
                f"{cls.__name__}.{name} does not match JobBackend.{name}"
