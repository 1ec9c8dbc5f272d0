"""JobBackend: what the daemon needs of whatever runs jobs on this node.

Two implementations: the local :class:`agentd.control.manager.JobManager` (queue, cgroups,
signals) and :class:`agentd.control.slurm.SlurmBackend` (Slurm's own commands). The daemon
routes a request to the backend that owns the job and calls only these methods; anything
else (submit, logs, migration hooks) is the local manager's alone.

Every action names the job by its id on this node and returns the job's :class:`JobInfo`
after the action, or raises :class:`agentd.protocol.errors.ProtocolError` (NOT_FOUND,
CONFLICT, INVALID, FAILED) with a message that names the job and the remedy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from agentd.protocol.jobs import JobInfo
from agentd.telemetry.cgroup_paths import CgroupRef


@runtime_checkable
class JobBackend(Protocol):
    """The job actions both the local manager and the Slurm backend carry out."""

    def jobs(self, active_only: bool = False) -> list[JobInfo]:
        """Every job this backend shows on this node (only unfinished ones with ``active_only``)."""
        ...

    def get(self, job_id: str) -> JobInfo:
        """One job; NOT_FOUND when unknown."""
        ...

    def pause(self, job_id: str, actor: str = "") -> JobInfo:
        """Stop the job's processes (they keep their memory)."""
        ...

    def resume(self, job_id: str, actor: str = "") -> JobInfo:
        """Continue a paused job."""
        ...

    def set_priority(self, job_id: str, priority: int, actor: str = "") -> JobInfo:
        """Change the job's priority (-10..10, higher is more important)."""
        ...

    def cancel(self, job_id: str, grace_s: float = 10.0, actor: str = "") -> JobInfo:
        """End the job: SIGTERM, SIGKILL after ``grace_s``."""
        ...

    def probes(self) -> dict[str, tuple[CgroupRef | None, list[int]]]:
        """Per live job, its cgroup and processes, for the telemetry collector."""
        ...

    def close(self) -> None:
        """Release what the backend holds; never ends jobs."""
        ...


if TYPE_CHECKING:  # mypy proves both backends conform; nothing is imported at run time
    from agentd.control.manager import JobManager
    from agentd.control.slurm import SlurmBackend

    def _conforms(local: JobManager, slurm: SlurmBackend) -> tuple[JobBackend, JobBackend]:
        return local, slurm
