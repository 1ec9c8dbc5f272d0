"""Requests, replies and stream messages: one schema per command.

Every request names its command in ``cmd`` (the msgspec tag), carries the protocol version
``v``, a client-chosen request id ``id`` echoed by the reply, and the role it needs
(``viewer`` reads, ``user`` submits and controls its own jobs, ``operator`` controls every job,
``admin`` may also run jobs as others, ``daemon`` is for daemon-to-daemon transfers only).
The docstring of each request is its documentation: docs/protocol.md and the CLI help are
generated from it.

New commands register with :func:`command`, which keeps the table in :data:`COMMANDS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import msgspec

from agentd.metrics.samples import NodeInventory, NodeSample
from agentd.protocol.alerts import Alert
from agentd.protocol.jobs import Event, GroupMember, JobInfo, JobSpec
from agentd.protocol.limits import (
    Actor,
    Endpoint,
    Env,
    GraceSeconds,
    HistoryCount,
    JobId,
    KeyText,
    LogOffset,
    LogPosition,
    LogReadBytes,
    PriorityValue,
)

PROTOCOL_VERSION = 1
# Largest frame either side accepts (checkpoint chunks are 1 MiB; leave room for the header).
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
Role = Literal["viewer", "user", "operator", "admin", "daemon"]
# What ``hello`` may list in ``capabilities``, and what each promises. A client checks for a
# capability before offering the action; a daemon lacking it answers UNAVAILABLE.
CAPABILITIES: dict[str, str] = {
    "telemetry": "the stream carries node, GPU and job samples (`sample`, `inv`, `hb`)",
    "snapshot": "`snapshot` answers (always present)",
    "jobs": "job control: `submit`, `jobs`, `show`",
    "pause": "`pause` and `resume` (cgroup freezer, SIGSTOP where none)",
    "priority": "`priority`",
    "cancel": "`cancel`",
    "logs": "`logs`",
    "slurm": "Slurm jobs of this node appear in `jobs` (backend `slurm`) and are controlled through Slurm",
    "migrate": "`migrate` to and from this daemon (checkpoint contract, or restart)",
    "criu": "`migrate` also for jobs without a checkpoint contract (CRIU works here)",
    "prometheus": "agentd serves Prometheus `/metrics` (docs/install.md)",
    "alerts": "health rules run on the node: `alerts`, alert events, alerts in `snapshot` (docs/health.md)",
}


class Request(msgspec.Struct, kw_only=True, tag_field="cmd"):
    """Base of every request."""

    role: ClassVar[str] = "viewer"
    reply: ClassVar[type[Reply]]
    v: int = PROTOCOL_VERSION
    id: int = 0
    actor: Actor = ""  # a note from the client for the audit log; the daemon names the caller itself


class Reply(msgspec.Struct, kw_only=True):
    """Base of every successful reply."""

    v: int = PROTOCOL_VERSION
    id: int = 0
    ok: bool = True


class ErrorReply(msgspec.Struct, kw_only=True):
    """The reply to any request that failed: a numeric code, a message, the field at fault."""

    v: int = PROTOCOL_VERSION
    id: int = 0
    ok: bool = False
    code: int
    message: str
    field: str = ""


class Header(msgspec.Struct, kw_only=True):
    """The part of a request read before anything else, to check version and command."""

    v: int
    cmd: str
    id: int = 0


COMMANDS: dict[str, type[Request]] = {}


_Req = TypeVar("_Req", bound="Request")


def command(reply: type[Reply], role: Role = "viewer") -> Callable[[type[_Req]], type[_Req]]:
    """Class decorator registering a request type, its reply type and required role."""

    def register(cls: type[_Req]) -> type[_Req]:
        name = cls.__struct_config__.tag
        assert isinstance(name, str), cls
        if name in COMMANDS:
            raise ValueError(f"command {name!r} registered twice")
        cls.reply = reply
        cls.role = role
        COMMANDS[name] = cls
        return cls

    return register


# ---- replies ---------------------------------------------------------------------------

class HelloReply(Reply, kw_only=True):
    """``epoch`` is the same as in stream messages: a different value means a restarted daemon."""

    node: str
    agentd_version: str
    protocol: int = PROTOCOL_VERSION
    pub_endpoint: str
    capabilities: list[str] = []
    server_time_s: float
    role: str = "viewer"  # what this caller may do here
    user: str = ""  # the Unix user this caller acts as ("" when none: unverified, or a key without one)
    verified_by: str = ""  # how the daemon knows: "peer credentials", "kernel TCP table", "CURVE key NAME", ""
    local_endpoint: str = ""  # the node's ipc socket, where the kernel names every local caller
    problems: list[str] = []  # what the daemon could not read or write in its state dir (file, row, why)
    epoch: int = 0  # this run of the daemon (see the stream's `epoch`); 0 from daemons that predate it


class SnapshotReply(Reply, kw_only=True):
    """``seq`` and ``epoch``: the stream position this snapshot is consistent with."""

    seq: int
    epoch: int = 0
    inventory: NodeInventory
    samples: list[NodeSample] = []
    jobs: list[JobInfo] = []
    events: list[Event] = []
    jobs_omitted: int = 0  # ended jobs left out to fit the frame limit (ask `jobs` for them)
    alerts: list[Alert] = []  # health alerts firing now (docs/health.md)


class JobReply(Reply, kw_only=True):
    job: JobInfo
    message: str = ""


class JobsReply(Reply, kw_only=True):
    """Every unfinished job, then ended ones newest first as long as the reply fits
    MAX_MESSAGE_BYTES; ``omitted`` counts the ended jobs left out."""

    jobs: list[JobInfo] = []
    omitted: int = 0


class LogsReply(Reply, kw_only=True):
    data: bytes = b""
    offset: LogPosition = 0  # where the next read should start
    size: LogPosition = 0  # current size of the log file
    eof: bool = True


class OkReply(Reply, kw_only=True):
    message: str = ""
    data: dict[str, Any] = {}


class AlertsReply(Reply, kw_only=True):
    alerts: list[Alert] = []


# ---- requests --------------------------------------------------------------------------

@command(HelloReply)
class Hello(Request, tag="hello", kw_only=True):
    """Who is this daemon: node name, versions, stream endpoint, capabilities, your role."""


@command(SnapshotReply)
class Snapshot(Request, tag="snapshot", kw_only=True):
    """Full current state for a late joiner: inventory, the last ``history`` samples, all jobs,
    recent events, and the stream sequence number it is consistent with (Clone pattern:
    drop stream messages with ``seq`` at or below it)."""

    history: HistoryCount = 2


@command(AlertsReply)
class Alerts(Request, tag="alerts", kw_only=True):
    """The health alerts firing on this node now, oldest first (rules: docs/health.md)."""


@command(JobReply, role="user")
class Submit(Request, tag="submit", kw_only=True):
    """Submit a job. Refused (INVALID, naming the field) when the spec is impossible here.
    ``node``: at a relay, the node behind it that runs the job (required where nodes are
    behind it; the relay's own name runs it there); elsewhere empty or the node's own name."""

    spec: JobSpec
    node: Annotated[str, msgspec.Meta(max_length=253)] = ""


@command(JobsReply)
class Jobs(Request, tag="jobs", kw_only=True):
    """List jobs; finished ones too unless ``active_only``."""

    active_only: bool = False


@command(JobReply)
class Show(Request, tag="show", kw_only=True):
    """One job in full."""

    job: JobId


@command(JobReply, role="user")
class Pause(Request, tag="pause", kw_only=True):
    """Freeze a running job; replies once the kernel reports it frozen. No-op when paused."""

    job: JobId


@command(JobReply, role="user")
class Resume(Request, tag="resume", kw_only=True):
    """Thaw a paused job; replies once the kernel reports it thawed. No-op when running."""

    job: JobId


@command(JobReply, role="user")
class Priority(Request, tag="priority", kw_only=True):
    """Set a job's priority (-10..10, higher is more important): queue order when queued,
    nice and cgroup CPU/IO weight when running."""

    job: JobId
    priority: PriorityValue


@command(JobReply, role="user")
class Cancel(Request, tag="cancel", kw_only=True):
    """Stop a job: SIGTERM, SIGKILL after ``grace_s`` (0..3600); paused jobs are killed then
    thawed. Replies with the ended job when it ends within ``min(grace_s, 10)`` seconds;
    otherwise (or while 4 other cancels are already waiting) at once with the job still in its
    state and ``message`` saying it is being cancelled: the daemon sends SIGKILL at the
    deadline itself and the stream carries the end."""

    job: JobId
    grace_s: GraceSeconds = 10.0


@command(LogsReply)
class Logs(Request, tag="logs", kw_only=True):
    """Read a job's stdout or stderr; from ``offset`` (negative: that many bytes from the end)."""

    job: JobId
    stream: Literal["stdout", "stderr"] = "stdout"
    offset: LogOffset = -65536
    max_bytes: LogReadBytes = 65536


class MigrateReply(JobReply, kw_only=True):
    """A migration started: ``migration_id`` names this attempt; the job's ``migration["id"]``
    equals it while the job's ``migration`` describes this attempt (not an earlier one)."""

    migration_id: str = ""


@command(MigrateReply, role="user")
class Migrate(Request, tag="migrate", kw_only=True):
    """Move a job to another daemon (``target``: its request endpoint). ``restart`` allows
    starting from scratch when the job has no checkpoint contract; ``resume`` makes a paused
    job arrive running. Refused (INVALID) when ``target`` is the job's own node. The reply
    names this attempt (``migration_id``): follow the job only while ``migration["id"]`` is it."""

    job: JobId
    target: Endpoint
    target_key: KeyText = ""
    restart: bool = False
    resume: bool = False
    regroup: Regroup | None = None


class Regroup(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A rank of a group moving with its group (``agentctl migrate GROUP --nodes``): its place
    in the group on the new node set (same group, rank, world size and role) and the rendezvous
    variables that change with it (only torchrun's and Fleetdeck's group variables; the daemon
    refuses any other). On the target the rank waits, queued, for the new leader's admission
    round, so the whole group starts together from its checkpoints."""

    member: GroupMember
    env: Env = {}


# ---- stream ----------------------------------------------------------------------------

class StreamMsg(msgspec.Struct, kw_only=True, tag_field="t"):
    """Base of stream bodies. ``seq`` grows by one per message of a daemon, one counter for
    every topic, starting at 1 when the daemon starts; ``epoch`` names that run of the daemon
    (its start time in microseconds since 1970), so a restart shows as a new epoch, not as a
    guess from ``seq`` going back."""

    v: int = PROTOCOL_VERSION
    node: str
    seq: int
    epoch: int = 0


class Heartbeat(StreamMsg, tag="hb", kw_only=True):
    """Sent every second when nothing else was; three missed beats mark the node stale."""

    wall_s: float


class SampleMsg(StreamMsg, tag="sample", kw_only=True):
    sample: NodeSample


class EventMsg(StreamMsg, tag="event", kw_only=True):
    event: Event


class JobMsg(StreamMsg, tag="job", kw_only=True):
    """A job changed (state, priority, pids, migration progress...)."""

    job: JobInfo


class InventoryMsg(StreamMsg, tag="inv", kw_only=True):
    inventory: NodeInventory


StreamBody = Heartbeat | SampleMsg | EventMsg | JobMsg | InventoryMsg
TOPICS: dict[type[StreamMsg], bytes] = {
    Heartbeat: b"hb", SampleMsg: b"sample", EventMsg: b"event", JobMsg: b"job", InventoryMsg: b"inv",
}
