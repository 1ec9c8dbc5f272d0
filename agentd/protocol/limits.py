"""Size and range limits of everything a client sends, as named constants and typed aliases.

The schemas in :mod:`agentd.protocol.jobs`, :mod:`~agentd.protocol.messages` and
:mod:`~agentd.protocol.migration` use these aliases, so msgspec refuses an oversized or
out-of-range value while decoding, with an error naming the field and the limit. NaN and
infinity never pass: every float field has a finite range (a comparison with NaN is false).
docs/protocol.md lists the table from :data:`LIMITS`.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

# ---- job specs ---------------------------------------------------------------------------
MAX_NAME_CHARS = 256  # job name
MAX_ARGV_ITEMS = 4096  # argv entries
MAX_ARGV_BYTES = 256 * 1024  # argv, all entries together (UTF-8)
MAX_PATH_CHARS = 4096  # cwd (PATH_MAX)
MAX_USER_CHARS = 64  # a Unix user name
MAX_ENV_VARS = 1024  # env entries
MAX_ENV_NAME_CHARS = 256
MAX_ENV_BYTES = 256 * 1024  # env names and values together (UTF-8)
MAX_LABELS = 64
MAX_LABEL_KEY_CHARS = 128
MAX_LABEL_VALUE_CHARS = 1024
MAX_METRICS_PER_JOB = 64  # distinct application metric names (also the spec's counters)
MAX_METRIC_NAME_CHARS = 128
MAX_GPUS = 1024
MAX_CPUS = 65536.0
MAX_MEMORY_BYTES = 1 << 60
MAX_SIGNAL_CHARS = 16
MAX_CHECKPOINT_TIMEOUT_S = 86400.0
PRIORITY_MIN = -10
PRIORITY_MAX = 10

# ---- requests ----------------------------------------------------------------------------
MAX_ACTOR_CHARS = 256
MAX_JOB_ID_CHARS = 256
MAX_GRACE_S = 3600.0  # cancel: SIGKILL at most an hour after SIGTERM
MAX_LOG_READ_BYTES = 1 << 20  # logs: max_bytes
MAX_LOG_OFFSET = 1 << 62
MAX_SNAPSHOT_HISTORY = 100_000  # asked-for samples; the daemon sends at most what it keeps
MAX_ENDPOINT_CHARS = 1024
MAX_KEY_CHARS = 1024  # a CURVE key or the path of a key file
MAX_REASON_CHARS = 1024
MAX_CHUNK_BYTES = 1 << 20  # one migration chunk
MAX_CHECKPOINT_BYTES = 1 << 50
MIGRATION_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"  # a file name: no '/', never '.' or '..'
SHA256_PATTERN = r"^([0-9a-f]{64})?$"
MAX_WALL_S = 1e11  # a wall-clock time in seconds since 1970 (year ~5000): finite, never negative
MAX_LOG_BYTES = 1 << 62  # a log file's size or a read position in it

# ---- daemon state --------------------------------------------------------------------------
MAX_UNFINISHED_JOBS = 512  # queued, running, paused, checkpointing, migrating: a submit past it is refused
MAX_LISTED_JOB_BYTES = 8 * 1024  # a job larger than this is listed in short form by jobs/snapshot
DEFAULT_JOB_RETENTION_S = 24 * 3600.0  # ended jobs are forgotten after this long...
MAX_ENDED_JOBS = 1000  # ...or when more than this many have ended, oldest first

# typed aliases ---------------------------------------------------------------------------------
Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME_CHARS)]
Arg = Annotated[str, msgspec.Meta(max_length=MAX_ARGV_BYTES)]
Argv = Annotated[list[Arg], msgspec.Meta(min_length=1, max_length=MAX_ARGV_ITEMS)]
PathText = Annotated[str, msgspec.Meta(max_length=MAX_PATH_CHARS)]
UserName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_USER_CHARS)]
EnvName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ENV_NAME_CHARS, pattern=r"^[^=\x00]+$")]
EnvValue = Annotated[str, msgspec.Meta(max_length=MAX_ENV_BYTES)]
Env = Annotated[dict[EnvName, EnvValue], msgspec.Meta(max_length=MAX_ENV_VARS)]
LabelKey = Annotated[str, msgspec.Meta(max_length=MAX_LABEL_KEY_CHARS)]
LabelValue = Annotated[str, msgspec.Meta(max_length=MAX_LABEL_VALUE_CHARS)]
Labels = Annotated[dict[LabelKey, LabelValue], msgspec.Meta(max_length=MAX_LABELS)]
MetricName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_METRIC_NAME_CHARS)]
Counters = Annotated[list[MetricName], msgspec.Meta(max_length=MAX_METRICS_PER_JOB)]
GpuCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_GPUS)]
Cpus = Annotated[float, msgspec.Meta(gt=0, le=MAX_CPUS)]
MemoryBytes = Annotated[int, msgspec.Meta(gt=0, le=MAX_MEMORY_BYTES)]
PriorityValue = Annotated[int, msgspec.Meta(ge=PRIORITY_MIN, le=PRIORITY_MAX)]
SignalName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SIGNAL_CHARS)]
CheckpointTimeout = Annotated[float, msgspec.Meta(gt=0, le=MAX_CHECKPOINT_TIMEOUT_S)]
Actor = Annotated[str, msgspec.Meta(max_length=MAX_ACTOR_CHARS)]
JobId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_JOB_ID_CHARS)]
GraceSeconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_GRACE_S)]
LogReadBytes = Annotated[int, msgspec.Meta(ge=0, le=MAX_LOG_READ_BYTES)]
LogOffset = Annotated[int, msgspec.Meta(ge=-MAX_LOG_OFFSET, le=MAX_LOG_OFFSET)]
HistoryCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_SNAPSHOT_HISTORY)]
Endpoint = Annotated[str, msgspec.Meta(max_length=MAX_ENDPOINT_CHARS)]
KeyText = Annotated[str, msgspec.Meta(max_length=MAX_KEY_CHARS)]
# A CURVE public key itself (40 Z85 characters) or "" (none), never a path: a daemon is handed
# it by a client and must not read files on its word.
Z85_KEY_PATTERN = r"^([0-9a-zA-Z.:+=^!/*?&<>()\[\]{}@%$#-]{40})?$"
PublicKey = Annotated[str, msgspec.Meta(pattern=Z85_KEY_PATTERN)]
Reason = Annotated[str, msgspec.Meta(max_length=MAX_REASON_CHARS)]
MigrationId = Annotated[str, msgspec.Meta(pattern=MIGRATION_ID_PATTERN)]
Sha256 = Annotated[str, msgspec.Meta(pattern=SHA256_PATTERN)]
ChunkData = Annotated[bytes, msgspec.Meta(max_length=MAX_CHUNK_BYTES)]
ByteOffset = Annotated[int, msgspec.Meta(ge=0, le=MAX_CHECKPOINT_BYTES)]
WallSeconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_WALL_S)]  # NaN and infinity fail the range
LogPosition = Annotated[int, msgspec.Meta(ge=0, le=MAX_LOG_BYTES)]
ByteCount = Annotated[int, msgspec.Meta(ge=0)]

# (what, limit) rows for docs/protocol.md
LIMITS: list[tuple[str, str]] = [
    ("job name", f"{MAX_NAME_CHARS} characters"),
    ("argv", f"1 to {MAX_ARGV_ITEMS} items, {MAX_ARGV_BYTES} bytes in total"),
    ("cwd", f"{MAX_PATH_CHARS} characters"),
    ("user", f"{MAX_USER_CHARS} characters"),
    ("env", f"{MAX_ENV_VARS} variables, {MAX_ENV_BYTES} bytes in total; names without `=` or NUL"),
    ("labels", f"{MAX_LABELS}; keys {MAX_LABEL_KEY_CHARS}, values {MAX_LABEL_VALUE_CHARS} characters"),
    ("counters / application metrics per job", f"{MAX_METRICS_PER_JOB} names of at most {MAX_METRIC_NAME_CHARS} characters"),
    ("gpus", f"0 to {MAX_GPUS}"),
    ("cpus", f"more than 0, at most {MAX_CPUS:g}; finite"),
    ("memory_bytes", f"1 to {MAX_MEMORY_BYTES}"),
    ("priority", f"{PRIORITY_MIN} to {PRIORITY_MAX}"),
    ("checkpoint.timeout_s", f"more than 0, at most {MAX_CHECKPOINT_TIMEOUT_S:g} s; finite"),
    ("cancel grace_s", f"0 to {MAX_GRACE_S:g} s; finite"),
    ("logs max_bytes", f"0 to {MAX_LOG_READ_BYTES}"),
    ("snapshot history", f"0 to {MAX_SNAPSHOT_HISTORY} (the daemon sends at most the samples it keeps)"),
    ("actor, job ids", f"{MAX_ACTOR_CHARS} / {MAX_JOB_ID_CHARS} characters"),
    ("migration_id", f"a file name: `{MIGRATION_ID_PATTERN}`"),
    ("migrate_chunk data", f"{MAX_CHUNK_BYTES} bytes"),
    ("migration offsets and sizes", f"0 to {MAX_CHECKPOINT_BYTES} bytes (offers, chunks and their replies)"),
    ("wall times sent between daemons", f"finite, 0 to {MAX_WALL_S:g} s since 1970"),
    ("unfinished jobs per node", f"{MAX_UNFINISHED_JOBS}; a submit past it is refused (TOO_LARGE)"),
    ("one job in `jobs`/`snapshot`", f"{MAX_LISTED_JOB_BYTES} bytes; a larger one is listed in short form "
                                     "(`short: true`, no env/labels/cwd, argv[0] only); `show` has all of it"),
    ("ended jobs kept", f"{MAX_ENDED_JOBS}, for `--job-retention` (default {DEFAULT_JOB_RETENTION_S / 3600:g} h)"),
]


_SAFE_NAME = re.compile(MIGRATION_ID_PATTERN)


def is_safe_name(name: object) -> bool:
    """True when ``name`` can be one path component under a directory of ours: letters,
    digits, ``_.-``, not starting with a dot (so never ``.`` or ``..``), no ``/`` or NUL."""
    return isinstance(name, str) and _SAFE_NAME.fullmatch(name) is not None


def spec_totals_error(argv: list[str], env: dict[str, str]) -> str | None:
    """The message for argv or env over their total byte limits, or None when within them."""
    argv_bytes = sum(len(a.encode("utf-8", "surrogatepass")) for a in argv)
    if argv_bytes > MAX_ARGV_BYTES:
        return f"argv holds {argv_bytes} bytes; the limit is {MAX_ARGV_BYTES} bytes in total - at `$.argv`"
    env_bytes = sum(len(k.encode("utf-8", "surrogatepass")) + len(v.encode("utf-8", "surrogatepass")) for k, v in env.items())
    if env_bytes > MAX_ENV_BYTES:
        return f"env holds {env_bytes} bytes; the limit is {MAX_ENV_BYTES} bytes in total - at `$.env`"
    return None
