"""Job specs, job states and events: what a daemon runs and what it tells about it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from agentd.protocol.limits import (
    PRIORITY_MAX,  # noqa: F401  (re-exported: callers import them from here)
    PRIORITY_MIN,  # noqa: F401
    Argv,
    ByteCount,
    CheckpointTimeout,
    Counters,
    Cpus,
    Endpoint,
    Env,
    GpuCount,
    JobId,
    Labels,
    MemoryBytes,
    Name,
    PathText,
    PriorityValue,
    PublicKey,
    SignalName,
    UserName,
    spec_totals_error,
)

MAX_LINEAGE = 64  # earlier hops a job remembers: the first, then the latest (see trim_lineage)
Lineage = Annotated[list[JobId], msgspec.Meta(max_length=MAX_LINEAGE)]


def trim_lineage(ids: list[str]) -> list[str]:
    """``ids`` (oldest first) within MAX_LINEAGE: the origin is kept, then the newest hops."""
    if len(ids) <= MAX_LINEAGE:
        return list(ids)
    return [ids[0], *ids[len(ids) - MAX_LINEAGE + 1:]]


JobState = Literal[
    "queued", "running", "paused", "checkpointing", "migrating",
    "succeeded", "failed", "cancelled", "migrated",
]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "migrated"})
ACTIVE_STATES: frozenset[str] = frozenset({"running", "paused", "checkpointing", "migrating"})


class CheckpointContract(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a job checkpoints: on ``signal`` it writes its state to AGENTD_CHECKPOINT_DIR and
    exits 0 within ``timeout_s`` seconds."""

    signal: SignalName = "SIGUSR1"
    timeout_s: CheckpointTimeout = 60.0


MAX_GROUP_RANKS = 65536
MAX_GROUP_NODES = 4096
RankIndex = Annotated[int, msgspec.Meta(ge=0, lt=MAX_GROUP_RANKS)]
GpuIndexes = Annotated[list[Annotated[int, msgspec.Meta(ge=0, lt=1024)]], msgspec.Meta(max_length=64)]


class GroupMember(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """This job is one rank of a group: a gang job spanning nodes (docs/groups.md).

    ``id`` is the group's cluster-unique id (``gpu-a.run-7``); ``gpu_indexes`` pins the GPUs of
    this node the rank was given (empty: any ``gpus`` free ones)."""

    id: JobId
    rank: RankIndex
    world_size: Annotated[int, msgspec.Meta(ge=1, le=MAX_GROUP_RANKS)]
    role: Name = ""
    node_rank: RankIndex = 0
    local_rank: RankIndex = 0
    gpu_indexes: GpuIndexes = []
    # Gang admission and group control (docs/groups.md): rank 0's node daemon is the leader.
    local_world_size: Annotated[int, msgspec.Meta(ge=1, le=MAX_GROUP_RANKS)] = 1  # ranks on this node
    leader: Endpoint = ""  # the leader's request endpoint, as the other nodes reach it
    nodes: Annotated[list[Endpoint], msgspec.Meta(max_length=MAX_GROUP_NODES)] = []  # by node_rank
    # Each node's CURVE server key, by node_rank ("" for a node without CURVE, on loopback): the
    # leader and the radar reach the other nodes' daemons with it (docs/groups.md, "Security").
    node_keys: Annotated[list[PublicKey], msgspec.Meta(max_length=MAX_GROUP_NODES)] = []
    on_rank_failure: Literal["cancel", "ignore"] = "cancel"


class JobSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """What to run. ``argv`` is a list; a shell string only with ``shell=True`` (one element).

    ``counters`` names the application metrics that only grow (charted as rates).
    Every field is bounded (agentd.protocol.limits); decoding refuses what is over a limit.
    """

    argv: Argv
    name: Name = ""
    shell: bool = False
    cwd: PathText | None = None
    env: Env = {}
    user: UserName | None = None
    gpus: GpuCount = 0
    cpus: Cpus | None = None
    memory_bytes: MemoryBytes | None = None
    priority: PriorityValue = 0
    kind: Literal["job", "agent"] = "job"
    checkpoint: CheckpointContract | None = None
    labels: Labels = {}
    counters: Counters = []
    group: GroupMember | None = None  # set for the ranks of a gang job

    def __post_init__(self) -> None:
        # Totals the per-field constraints cannot say; msgspec turns this into a ValidationError.
        problem = spec_totals_error(self.argv, self.env)
        if problem:
            raise ValueError(problem)


class ToolCall(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One tool call of an agent, with the resources its own cgroup used (when it had one)."""

    name: str
    started_s: float
    ended_s: float | None = None
    exit_code: int | None = None
    cpu_s: float | None = None
    mem_peak_bytes: ByteCount | None = None


class JobInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Everything known about one job. ``id`` is unique across the cluster (``node.N``)."""

    id: str
    node: str
    name: str
    state: JobState
    spec: JobSpec
    priority: PriorityValue = 0
    backend: str = "local"  # "local" or "slurm"
    owner: str = ""  # the Unix user the job runs as (its submitter unless an admin chose another)
    pid: int | None = None
    pids: list[int] = []
    gpus: list[int] = []
    cgroup: str | None = None
    control: str = ""  # "cgroup-v2", "cgroup-v1" or "pgroup" (no writable cgroup)
    exit_code: int | None = None
    reason: str = ""
    submitted_s: float = 0.0
    started_s: float | None = None
    ended_s: float | None = None
    queue_position: int | None = None
    gpu_mem_held_bytes: ByteCount = 0
    metrics: dict[str, float] = {}
    tool_calls: list[ToolCall] = []
    resumed_from: str | None = None  # "node.N" of the job this one continues
    migrated_to: str | None = None  # "node.N" that now runs this job
    migration: dict[str, Any] = {}  # id (of the attempt), phase, bytes_sent, bytes_total, elapsed_s, target
    # One identity across migrations: the ids of the earlier hops, oldest first (the first is
    # where it was submitted), and when that first submit was (wall seconds). A job never
    # migrated has no lineage; ``origin`` and ``first_submitted_s`` are then its own.
    lineage: Lineage = []
    origin: str = ""  # the job's first id ("node.N" where it was submitted); "" = ``id``
    first_submitted_s: float = 0.0  # wall time of the first submit; 0 = ``submitted_s``
    # Changes of state or priority in this daemon life (0: not counted, e.g. Slurm or a
    # recording). Within one life a higher revision is newer: a viewer drops a stream message
    # older than what a reply already told it.
    revision: int = 0
    short: bool = False  # listed in short form (over MAX_LISTED_JOB_BYTES): `show` has the whole job


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Something that happened: a state change, a control action and its result, an error.

    ``kind``: "job.state", "action", "migration", "tool_call", "error", "node".
    """

    wall_s: float
    node: str
    kind: str
    message: str
    job_id: str = ""
    actor: str = ""
    ok: bool = True
    data: dict[str, Any] = {}
