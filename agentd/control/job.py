"""The local manager's record of one job: its state machine and its typed runtime data.

States (the wire's ``JobState``) and every move between them the manager may make::

    "" (new) -> queued
    queued -> running | migrating (held for a migration) | queued (restart_local) | failed | cancelled | migrated
    running <-> paused
    running | paused -> checkpointing -> running (checkpoint abandoned)
    running | paused | checkpointing -> migrating (processes gone, checkpoint on its way)
    running | paused | checkpointing | migrating -> queued (restart here after a failed migration)
    running | paused | checkpointing -> succeeded
    any non-terminal -> failed | cancelled | migrated

Anything else raises :class:`IllegalTransition`: a bug in the manager, never a user error.

Sub-states that do not show on the wire are named fields of :class:`Job` (see its docstring);
a job is *starting* while it is queued and its journaled launch is not confirmed yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from agentd.control.cgroups import JobCgroup
from agentd.protocol.jobs import TERMINAL_STATES, JobSpec, ToolCall

# States with processes on this node. "migrating" is parked: checkpoint written, no process here.
LIVE_STATES: frozenset[str] = frozenset({"running", "paused", "checkpointing"})
NON_TERMINAL: frozenset[str] = frozenset({"queued", "running", "paused", "checkpointing", "migrating"})

TRANSITIONS: frozenset[tuple[str, str]] = frozenset(
    {("", "queued"),
     ("queued", "running"), ("queued", "migrating"), ("queued", "queued"),
     ("running", "paused"), ("paused", "running"),
     ("running", "checkpointing"), ("paused", "checkpointing"), ("checkpointing", "running"),
     ("running", "migrating"), ("paused", "migrating"), ("checkpointing", "migrating"),
     ("running", "queued"), ("paused", "queued"), ("checkpointing", "queued"), ("migrating", "queued")}
    | {(s, "succeeded") for s in LIVE_STATES}
    | {(s, end) for s in NON_TERMINAL for end in ("failed", "cancelled", "migrated")}
)


class IllegalTransition(RuntimeError):
    """The manager tried a state change that :data:`TRANSITIONS` does not allow."""

    def __init__(self, job_id: str, old: str, new: str) -> None:
        allowed = sorted(to for frm, to in TRANSITIONS if frm == old)
        super().__init__(f"job {job_id}: {old or 'new'} -> {new} is not an allowed transition "
                         f"(from {old or 'new'} only {', '.join(allowed) or 'nothing'})")
        self.job_id, self.old, self.new = job_id, old, new


def check_transition(job_id: str, old: str, new: str) -> None:
    """Raise :class:`IllegalTransition` unless ``old -> new`` is in :data:`TRANSITIONS`."""
    if (old, new) not in TRANSITIONS:
        raise IllegalTransition(job_id, old, new)


class CgroupRecord(msgspec.Struct, frozen=True):
    """Where a job's cgroup dirs are, as kept in its record."""

    version: int
    paths: dict[str, str]


class Runtime(msgspec.Struct, frozen=True):
    """The private part of a job's record (jobs.db ``runtime`` column and job.json): what a
    restarted agentd needs to re-adopt the job. Field names are the stored keys."""

    shim_pid: int | None = None
    start_ticks: int | None = None
    job_dir: str = ""
    checkpoint_dir: str = ""
    resume: bool = False
    migration: dict[str, Any] = {}
    exited: bool = False
    held: bool = False
    pause_on_start: bool = False
    restore_images: str = ""
    launch_token: str | None = None
    cgroup: CgroupRecord | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object stored in jobs.db and job.json."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Runtime:
        """Read a stored runtime object leniently: a key missing or of the wrong type takes its
        default (older agentd versions wrote fewer keys), so one odd field never loses a job."""
        def opt_int(key: str) -> int | None:
            v = raw.get(key)
            return v if isinstance(v, int) and not isinstance(v, bool) else None

        cg = raw.get("cgroup")
        cgroup = None
        if isinstance(cg, dict) and isinstance(cg.get("paths"), dict):
            cgroup = CgroupRecord(version=int(cg.get("version") or 0), paths={str(k): str(v) for k, v in cg["paths"].items()})
        migration = raw.get("migration")
        return cls(shim_pid=opt_int("shim_pid"), start_ticks=opt_int("start_ticks"),
                   job_dir=str(raw.get("job_dir") or ""), checkpoint_dir=str(raw.get("checkpoint_dir") or ""),
                   resume=bool(raw.get("resume")), migration=dict(migration) if isinstance(migration, dict) else {},
                   exited=bool(raw.get("exited")), held=bool(raw.get("held")),
                   pause_on_start=bool(raw.get("pause_on_start")), restore_images=str(raw.get("restore_images") or ""),
                   launch_token=str(raw["launch_token"]) if raw.get("launch_token") else None, cgroup=cgroup)


@dataclass
class Job:
    """The manager's mutable record of one job (``JobManager._info`` gives the wire view).

    Sub-states beside ``state``:

    - ``cancelling``: a cancel was accepted; ``kill_at`` (monotonic s) is when SIGKILL follows
      SIGTERM, ``cancel_actor`` who asked. The job ends ``cancelled`` whatever its exit code.
    - ``held``: a migration owns this job's exit: when its processes end, the exit code is only
      recorded (``exited``) and a migration hook decides the next state.
    - ``exited``: the processes are gone but the job is not over (checkpoint written or stopped
      for a migration); ``exit_code`` holds what the shim reported.
    - ``pause_on_start``: freeze the job as soon as its next launch has started (a paused job
      restarted or received by a migration).
    - ``launch_token``: a launch was journaled and not yet confirmed (see manager's docstring);
      while the job is also queued it is *starting* (:attr:`starting`).
    - ``restore_images``: the next launch restores this CRIU image instead of running argv.
    """

    n: int
    id: str
    node: str
    spec: JobSpec
    state: str
    priority: int
    submitted_s: float
    job_dir: Path
    checkpoint_dir: Path
    started_s: float | None = None
    ended_s: float | None = None
    pid: int | None = None
    shim_pid: int | None = None
    start_ticks: int | None = None
    gpus: list[int] = field(default_factory=list)
    cgroup: JobCgroup | None = None
    control: str = ""
    exit_code: int | None = None
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    counters: set[str] = field(default_factory=set)
    tool_calls: list[ToolCall] = field(default_factory=list)
    open_tools: dict[str, ToolCall] = field(default_factory=dict)
    resumed_from: str | None = None
    resume: bool = False
    cancelling: bool = False
    cancel_actor: str = ""
    kill_at: float | None = None
    gpu_mem_bytes: int = 0
    migrated_to: str | None = None
    migration: dict[str, Any] = field(default_factory=dict)
    exited: bool = False
    held: bool = False
    pause_on_start: bool = False
    restore_images: str = ""
    lineage: list[str] = field(default_factory=list)  # earlier hops' ids, oldest first
    first_submitted_s: float = 0.0  # wall time of the first submit (0: this job's own)
    launch_token: str | None = None
    # Counts this life's changes of state or priority: a viewer that got the job in a reply
    # can tell a stream message built before that change (and delivered after it) as older.
    revision: int = 0

    @property
    def starting(self) -> bool:
        """Queued with a launch in flight: its shim runs but the job has not exec'd yet."""
        return self.state == "queued" and self.launch_token is not None and self.shim_pid is not None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def live(self) -> bool:
        """Processes of the job may exist on this node."""
        return self.state in LIVE_STATES

    def set_state(self, new: str) -> str:
        """Move to ``new`` (checked against :data:`TRANSITIONS`); returns the old state."""
        old = self.state
        check_transition(self.id, old, new)
        self.state = new
        self.revision += 1
        return old

    def runtime(self) -> Runtime:
        """The typed private record of this job."""
        cg = None if self.cgroup is None else CgroupRecord(
            version=self.cgroup.version, paths={k: str(v) for k, v in self.cgroup.paths.items()})
        return Runtime(shim_pid=self.shim_pid, start_ticks=self.start_ticks, job_dir=str(self.job_dir),
                       checkpoint_dir=str(self.checkpoint_dir), resume=self.resume, migration=self.migration,
                       exited=self.exited, held=self.held, pause_on_start=self.pause_on_start,
                       restore_images=self.restore_images, launch_token=self.launch_token, cgroup=cg)
