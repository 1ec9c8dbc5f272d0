"""JobManager: the local backend that runs and controls work on this node.

How a job runs (files under ``<state_dir>/jobs/<N>/``):
- ``launch.json`` is written, then ``shim.py`` is spawned in its own session. The shim forks the
  job, which enters its cgroups (``<own cgroup>/agentd-<node>/job-<N>`` in each hierarchy) and
  its own session before it execs; ``pid.json`` appears once the exec happened. The shim copies
  stdout/stderr into ``stdout.log``/``stderr.log`` (10 MiB, one rotated file kept), forwards
  ``AGENTD_METRIC``/``AGENTD_TOOL`` lines to the report socket, and writes ``exit.json`` when the
  job ends. A restarted daemon is not the job's parent, but reads the same files: that is how
  jobs survive an agentd crash and still report their exit code.
- Control is ``cgroup-v2``, ``cgroup-v1`` (freezer, cpu.shares, ...) or ``pgroup`` (signals to
  the session; autogroup nice) when no cgroup is writable.
- Queue: strict order by priority then submission; GPUs, and declared CPUs/memory, gate starts.
- Every transition is a row in ``jobs.db`` (agentd.store.jobstore) and an Event; the job's
  latest record is also kept in ``jobs/<N>/job.json``, so a lost, damaged or older ``jobs.db``
  loses no job (the newer of the two wins).

Durability (nothing lost, nothing doubled):
- Launch journal: before the shim is spawned the job's row gets a fresh ``launch_token``; the
  shim claims it (symlink ``claim-<token>``) before it forks. A restart that finds a queued job
  with a token creates the same link as ``revoked``: if it wins, that launch never ran and the job
  starts once; if the shim won, the job started and is adopted. kill -9 anywhere in between
  never starts a job twice.
- Job numbers are never reused: the high-water mark is the largest of ``jobs.db``, the fsync'ed
  ``job-ids`` file, the job dirs and the job cgroup dirs; a stale cgroup that still holds
  processes is never adopted by a new job.
- A store that cannot be written (full disk) leaves jobs running and controllable: rows are
  retried every tick, submits are refused with the reason; a store that cannot be opened at
  start gives a degraded manager (existing jobs from their job dirs, no new jobs).

Threads: the daemon calls this from worker threads; one lock guards all job state, and only
``cancel``/``stop``/``wait_exit`` wait without holding it. Events and job updates are queued while
the lock is held and delivered in order after it is released, so callbacks may call back in.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import shutil
import pwd
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from agentd.control import criu, procs, statedir
from agentd.control.cgroups import CgroupLayout, JobCgroup, detect_layout, remove_layout
from agentd.control.reports import ReportInbox, report_socket_path
from agentd.control.spec import signal_number, validate_spec
from agentd.metrics.samples import AppMetric
from agentd.protocol.errors import ErrorCode, ProtocolError
from agentd.protocol.jobs import TERMINAL_STATES, Event, JobInfo, JobSpec, ToolCall, trim_lineage
from agentd.protocol.limits import (
    DEFAULT_JOB_RETENTION_S,
    MAX_ENDED_JOBS,
    MAX_GRACE_S,
    MAX_METRIC_NAME_CHARS,
    MAX_METRICS_PER_JOB,
    MAX_NAME_CHARS,
    MAX_UNFINISHED_JOBS,
)
from agentd.store.jobstore import DB_NAME, JobStore, StoreError, store_error
from agentd.telemetry.cgroup_paths import CgroupRef

log = logging.getLogger(__name__)

DEFAULT_CGROUP_ROOT = Path("/sys/fs/cgroup")
SHIM_PATH = Path(__file__).with_name("shim.py")
SHIM_START_TIMEOUT_S = 10.0
EXIT_FILE_WAIT_S = 1.5
STOP_TIMEOUT_S = 5.0
KILL_TIMEOUT_S = 5.0
MAX_TOOL_CALLS = 100
CANCEL_REPLY_WAIT_S = 10.0  # a cancel reply waits at most this long for the end of the job
MAX_WAITING_CANCELS = 4  # cancels waiting at once; half the daemon's request threads at most
RETENTION_CHECK_S = 30.0
MAX_REPORT_CLOCK_SKEW_S = 7 * 86400.0  # a report's wall_s further than this from now is malformed  # how often tick looks for ended jobs past their retention
MAX_LOG_READ = 1 << 20
LOG_MAX_BYTES = 10 << 20
LOG_KEEP = 2
LOCK_NAME = "jobs.lock"
HIGH_WATER_NAME = "job-ids"  # the highest job number handed out, beside jobs.db
JOB_FILE = "job.json"  # the job's latest record inside its job dir
STORE_RETRY_S = 10.0  # how often a store that could not be opened is tried again
# States with processes on this node. "migrating" is parked: checkpoint written, no process here.
LIVE_STATES = frozenset({"running", "paused", "checkpointing"})


def priority_nice(priority: int) -> int:
    """nice value for a job priority: +10 -> nice -10, -10 -> nice 10."""
    return max(-20, min(19, -priority))


@dataclass
class _Job:
    """The manager's mutable record of one job; ``info()`` gives the frozen wire view."""

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
    kill_at: float | None = None  # monotonic time of the SIGKILL a cancel promised
    gpu_mem_bytes: int = 0
    migrated_to: str | None = None
    migration: dict[str, Any] = field(default_factory=dict)
    exited: bool = False  # processes gone but not terminal (during a migration)
    held: bool = False  # a migration owns this job's exit: it only records the exit code
    pause_on_start: bool = False
    restore_images: str = ""  # the next launch restores this CRIU image instead of running argv
    lineage: list[str] = field(default_factory=list)  # earlier hops' ids, oldest first
    first_submitted_s: float = 0.0  # wall time of the first submit (0: this job's own)
    launch_token: str | None = None  # a launch journaled but not yet confirmed (see the module docstring)

    def runtime(self) -> dict[str, Any]:
        return {"shim_pid": self.shim_pid, "start_ticks": self.start_ticks, "job_dir": str(self.job_dir),
                "checkpoint_dir": str(self.checkpoint_dir), "resume": self.resume,
                "migration": self.migration, "exited": self.exited, "held": self.held,
                "pause_on_start": self.pause_on_start, "restore_images": self.restore_images,
                "launch_token": self.launch_token,
                "cgroup": None if self.cgroup is None else {"version": self.cgroup.version,
                                                            "paths": {k: str(v) for k, v in self.cgroup.paths.items()}}}


class JobManager:
    """Runs jobs on this node: queue, launch, pause/resume, priority, cancel, re-adoption."""

    def __init__(self, node: str, state_dir: Path, gpu_count: int, *, on_event: Callable[[Event], None],
                 on_job: Callable[[JobInfo], None], cgroup_root: Path = DEFAULT_CGROUP_ROOT,
                 cpu_count: int | None = None, mem_total_bytes: int | None = None,
                 clock: Callable[[], float] = time.time, retention_s: float = DEFAULT_JOB_RETENTION_S,
                 max_ended_jobs: int = MAX_ENDED_JOBS) -> None:
        self.node = node
        self.state_dir = Path(state_dir)
        self.gpu_count = gpu_count
        self.cpu_count = cpu_count
        self.mem_total_bytes = mem_total_bytes
        self.cgroup_root = Path(cgroup_root)
        self._on_event = on_event
        self._on_job = on_job
        self._clock = clock
        self._lock = threading.RLock()
        self._cb_lock = threading.Lock()
        self._pending: deque[Event | JobInfo] = deque()
        self._jobs: dict[str, _Job] = {}
        self._children: set[int] = set()
        self._store: JobStore | None = None
        self._inbox: ReportInbox | None = None
        self.layout: CgroupLayout | None = None
        self._lock_fd: int | None = None
        self.report_path = report_socket_path(self.state_dir)
        self.retention_s = retention_s
        self.max_ended_jobs = max_ended_jobs
        self._next_retention = 0.0
        self._cancel_waiters = threading.BoundedSemaphore(MAX_WAITING_CANCELS)
        self._closing = threading.Event()
        self._metric_refusals = 0  # metric names over MAX_METRICS_PER_JOB (or too long), all jobs
        self._metric_refusal_logged: set[str] = set()
        self._started = False
        self._high_water = 0
        self._unsaved: set[str] = set()  # jobs whose latest state is not in jobs.db yet
        self._store_down: str | None = None  # why the store cannot be written now
        self._store_retry_at = 0.0
        self._file_failures: set[str] = set()
        self.problems: list[str] = []  # what went wrong reading the state at start, for hello/events
        self.own_user = _user_name(os.geteuid())  # the owner of jobs whose spec names no user

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Open the store, find the cgroup subtree, re-adopt surviving jobs, open the report socket."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock_state_dir()
        statedir.secure_state_dir(self.state_dir)  # an older, looser state dir is tightened here
        statedir.make_traversable_dir(self.state_dir / "jobs")
        statedir.make_traversable_dir(self.state_dir / "checkpoints")
        blocked = statedir.unreachable_by_others(self.state_dir)
        if blocked is not None:
            log.warning("%s is not traversable by other users: jobs running as another user cannot reach "
                        "their checkpoint dir or the report socket in %s; chmod o+x %s or move the state dir",
                        blocked, self.state_dir, blocked)
        with self._lock:
            self._started = True
            self._open_store()
            # sqlite creates -wal/-shm with the main file's mode: 0600 here keeps all three private
            statedir.secure_state_dir(self.state_dir)
            self.layout = detect_layout(self.cgroup_root, self.node)
            if self.layout is None:
                log.warning("no writable cgroup under %s: jobs are controlled by process group only", self.cgroup_root)
            try:
                self._inbox = ReportInbox(self.report_path)
            except OSError as e:
                log.warning("cannot open the report socket %s: %s; jobs' own metrics are off", self.report_path, e)
            records = self._load_records()
            self._high_water = max([self._recorded_high_water(), *(n for _, n, _ in records)], default=0)
            for info, n, runtime in records:
                self._adopt(info, n, runtime)
            self._schedule()
        for problem in self.problems:
            self._emit(Event(wall_s=self._clock(), node=self.node, kind="store", ok=False, message=problem))
        self._flush()

    def _open_store(self) -> bool:
        """Open jobs.db; on failure run without it (degraded) and say why. True when open."""
        try:
            self._store = JobStore(self.state_dir / DB_NAME)
        except StoreError as e:
            self._store = None
            self._store_down = e.message
            self._store_retry_at = time.monotonic() + STORE_RETRY_S
            self.problems.append(f"{e.message}; running degraded: existing jobs are controlled, new jobs are refused")
            log.error("%s", self.problems[-1])
            return False
        self.problems.extend(self._store.problems)
        self._store_down = None
        return True

    def _load_records(self) -> list[tuple[JobInfo, int, dict[str, Any]]]:
        """Every job from jobs.db and from the job dirs' job.json, the newer record of each."""
        best: dict[int, tuple[JobInfo, int, dict[str, Any], float]] = {}
        if self._store is not None:
            seen = len(self._store.problems)
            for info, n, runtime, updated in self._store.load():
                best[n] = (info, n, runtime, updated)
            self.problems.extend(self._store.problems[seen:])  # rows that could not be read, by id
        recovered: list[int] = []
        for n, job_dir in self._job_dirs():
            path = job_dir / JOB_FILE
            try:
                raw = json.loads(path.read_bytes())
                info = msgspec.convert(raw["info"], type=JobInfo)
                runtime, updated = dict(raw["runtime"]), float(raw["updated_s"])
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError, msgspec.ValidationError) as e:
                if n not in best:
                    self.problems.append(f"job record {path} cannot be read ({e}); job number {n} is not managed")
                    log.error("%s", self.problems[-1])
                continue
            if n not in best or best[n][3] < updated:
                if n not in best or best[n][0].state != info.state:
                    recovered.append(n)
                best[n] = (info, n, runtime, updated)
                self._unsaved.add(info.id)  # write it back to jobs.db
        if recovered:
            msg = (f"job store {self.state_dir / DB_NAME} lacked or had older records of jobs "
                   f"{', '.join(best[n][0].id for n in sorted(recovered))}; recovered them from their job dirs")
            self.problems.append(msg)
            log.warning("%s", msg)
        return [(info, n, runtime) for n, (info, _, runtime, _) in sorted(best.items())]

    def _job_dirs(self) -> list[tuple[int, Path]]:
        try:
            return sorted((int(d.name), d) for d in (self.state_dir / "jobs").iterdir() if d.name.isdigit())
        except OSError:
            return []

    def _recorded_high_water(self) -> int:
        """The highest job number anything on this node remembers: jobs.db, the job-ids file,
        the job dirs and the job cgroup dirs (any one of them may be lost or restored old)."""
        marks = [self._store.high_water() if self._store is not None else 0]
        with contextlib.suppress(OSError, ValueError):
            marks.append(int((self.state_dir / HIGH_WATER_NAME).read_text().strip() or 0))
        marks += [n for n, _ in self._job_dirs()]
        if self.layout is not None:
            for base in self.layout.bases.values():
                with contextlib.suppress(OSError):
                    marks += [int(d.name[4:]) for d in base.iterdir() if d.name.startswith("job-") and d.name[4:].isdigit()]
        return max(marks)

    def _allocate_number(self) -> int:
        """The next job number, recorded in the job-ids file (fsync'ed) and jobs.db before it is
        handed out. Raises StoreError (a full disk) or ProtocolError (no store)."""
        store = self._need_store()
        n = max(self._high_water, store.high_water()) + 1
        path = self.state_dir / HIGH_WATER_NAME
        tmp = path.with_name(path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, f"{n}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise store_error(path, "record job number", e) from None
        self._high_water = n
        store.set_high_water(n)
        return n

    def _lock_state_dir(self) -> None:
        """One manager per state dir: two would adopt and reap the same jobs."""
        path = self.state_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"state dir {self.state_dir} is in use by another agentd "
                                f"(pid {holder}); stop it or give this one its own --state-dir", "state_dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def stop_waiting(self) -> None:
        """Make waiting cancels reply now (the daemon is stopping); their SIGKILL deadlines stay."""
        self._closing.set()

    def close(self) -> None:
        """Stop listening and close the store. Never touches the jobs: they keep running."""
        self._closing.set()  # waiting cancels reply now (a restarted agentd does not know their deadline)
        with self._lock:
            self._started = False
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None
            self._reap_children()
            if self._inbox is not None:
                self._inbox.close()
                self._inbox = None
            if self._store is not None:
                self._store.close()
                self._store = None
            if self.layout is not None:
                remove_layout(self.layout)  # only empty dirs go: running jobs keep theirs

    @property
    def is_open(self) -> bool:
        """True between start() and close() (also while running degraded without a store)."""
        return self._started

    def resolve(self, job_id: str) -> str | None:
        """The id of a job this manager holds, from its id or its bare number; None if unknown.
        Jobs keep the node prefix they were submitted under, even after the node was renamed."""
        with self._lock:
            if job_id in self._jobs:
                return job_id
            if job_id.isdigit():
                return next((j.id for j in self._jobs.values() if j.n == int(job_id)), None)
        return None

    # ---- queries ---------------------------------------------------------------------
    def get(self, job_id: str) -> JobInfo:
        with self._lock:
            return self._info(self._find(job_id))

    def jobs(self, active_only: bool = False) -> list[JobInfo]:
        with self._lock:
            return [self._info(j) for j in sorted(self._jobs.values(), key=lambda j: j.n)
                    if not active_only or j.state not in TERMINAL_STATES]

    def probes(self) -> dict[str, tuple[CgroupRef | None, list[int]]]:
        """Per live job, its cgroup and processes, for the telemetry collector."""
        with self._lock:
            return {j.id: (j.cgroup.ref() if j.cgroup else None, sorted(self._pids(j)))
                    for j in self._jobs.values() if j.state in LIVE_STATES}

    @property
    def metric_refusals(self) -> int:
        """Metric values dropped so far (names over MAX_METRICS_PER_JOB per job, or too long)."""
        return self._metric_refusals

    def app_metrics(self) -> list[AppMetric]:
        """Latest application metrics of live jobs."""
        with self._lock:
            return [AppMetric(job_id=j.id, name=k, value=v, counter=k in j.counters)
                    for j in self._jobs.values() if j.state in LIVE_STATES for k, v in sorted(j.metrics.items())]

    def running_gpus(self) -> set[int]:
        """GPU indices held by running jobs (paused ones hold memory but leave the SMs idle)."""
        with self._lock:
            return {g for j in self._jobs.values() if j.state == "running" for g in j.gpus}

    def gpu_assignments(self) -> dict[int, list[int]]:
        """GPU index -> pids of the jobs holding it (paused jobs too: they still hold memory)."""
        with self._lock:
            out: dict[int, list[int]] = {}
            for j in self._jobs.values():
                if j.state in LIVE_STATES and j.gpus:
                    pids = sorted(self._pids(j))
                    for g in j.gpus:
                        out.setdefault(g, []).extend(pids)
            return out

    def read_log(self, job_id: str, stream: str = "stdout", offset: int = -65536,
                 max_bytes: int = 65536) -> tuple[bytes, int, int, bool]:
        """Read a job's log: (data, next offset, current size, eof). Negative offset: from the end.

        An offset past the end means the log rotated; reading restarts at 0.
        """
        if stream not in ("stdout", "stderr"):
            raise ProtocolError(ErrorCode.INVALID, f"log stream {stream!r} is unknown; use stdout or stderr", "stream")
        with self._lock:
            job = self._find(job_id)
            path = job.job_dir / f"{stream}.log"
        max_bytes = max(0, min(max_bytes, MAX_LOG_READ))
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                start = max(0, size + offset) if offset < 0 else (offset if offset <= size else 0)
                f.seek(start)
                data = f.read(min(max_bytes, size - start))
        except FileNotFoundError:
            return b"", 0, 0, True
        nxt = start + len(data)
        return data, nxt, size, nxt >= size

    # ---- actions ---------------------------------------------------------------------
    def submit(self, spec: JobSpec, actor: str = "", *, resume_from: str | None = None,
               checkpoint_dir: Path | None = None) -> JobInfo:
        """Queue a job (it starts at once when its resources are free). Raises ProtocolError(INVALID).

        ``checkpoint_dir`` with ``resume_from``: start from that checkpoint (AGENTD_RESUME=1).
        """
        try:
            if not isinstance(spec, JobSpec):
                raise ProtocolError(ErrorCode.BAD_MESSAGE, f"submit needs a JobSpec, not {type(spec).__name__}", "spec")
            validate_spec(spec, gpu_count=self.gpu_count, cpu_count=self.cpu_count,
                          mem_total_bytes=self.mem_total_bytes)
        except ProtocolError as e:
            self._emit(Event(wall_s=self._clock(), node=self.node, kind="action", message=f"submit refused: {e.message}",
                             actor=actor, ok=False, data={"action": "submit", "code": int(e.code), "field": e.field}))
            self._flush()
            raise
        with self._lock:
            unfinished = sum(1 for j in self._jobs.values() if j.state not in TERMINAL_STATES)
            if unfinished >= MAX_UNFINISHED_JOBS and resume_from is None:
                e = ProtocolError(ErrorCode.TOO_LARGE, f"node {self.node} already has {unfinished} unfinished jobs, "
                                  f"the limit is {MAX_UNFINISHED_JOBS}; wait for some to end or cancel some", "spec")
                self._emit(Event(wall_s=self._clock(), node=self.node, kind="action", message=f"submit refused: {e.message}",
                                 actor=actor, ok=False, data={"action": "submit", "code": int(e.code), "field": e.field}))
                err: ProtocolError | None = e
            else:
                err = None
        if err is not None:
            self._flush()
            raise err
        with self._lock:
            try:
                n = self._allocate_number()
                job_id = f"{self.node}.{n}"
                job = _Job(n=n, id=job_id, node=self.node, spec=spec, state="queued", priority=spec.priority,
                           submitted_s=self._clock(), job_dir=self.state_dir / "jobs" / str(n),
                           checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else self.state_dir / "checkpoints" / job_id,
                           resumed_from=resume_from, resume=checkpoint_dir is not None, counters=set(spec.counters))
                self._create_job_dir(job)
            except (StoreError, ProtocolError) as e:
                err = self._store_refusal(e)
                self._emit(Event(wall_s=self._clock(), node=self.node, kind="action", actor=actor, ok=False,
                                 message=f"submit refused: {err.message}",
                                 data={"action": "submit", "code": int(err.code), "field": err.field}))
            else:
                err = None
                self._jobs[job_id] = job
                self._transition(job, "", "queued", actor, "submitted")
                self._action(job, "submit", actor, True, f"job {job_id} ({job.spec.name or job.spec.argv[0]}) submitted")
                self._schedule()
                info = self._info(job)
        self._flush()
        if err is not None:
            raise err
        return info

    def pause(self, job_id: str, actor: str = "") -> JobInfo:
        """Freeze a running job; returns once the kernel reports it frozen. Paused: no-op."""
        return self._do("pause", job_id, actor, self._pause)

    def resume(self, job_id: str, actor: str = "") -> JobInfo:
        """Thaw a paused job; returns once the kernel reports it thawed. Running: no-op."""
        return self._do("resume", job_id, actor, self._resume)

    def set_priority(self, job_id: str, priority: int, actor: str = "") -> JobInfo:
        """Change priority: queued jobs reorder; live jobs get nice and cgroup CPU/IO weights."""
        return self._do("priority", job_id, actor, lambda j, a: self._set_priority(j, priority, a))

    def cancel(self, job_id: str, grace_s: float = 10.0, actor: str = "") -> JobInfo:
        """SIGTERM everything in the job, SIGKILL after ``grace_s``; paused jobs are killed then thawed.

        Waits for the end at most ``min(grace_s, CANCEL_REPLY_WAIT_S)`` seconds, and only while
        fewer than ``MAX_WAITING_CANCELS`` other cancels wait: a slow job never holds a request
        thread for long. Otherwise it returns the job still live (``reason`` says it is being
        cancelled); ``tick`` sends SIGKILL at the deadline and ends the job. A finished job is
        a CONFLICT; cancelling a job already being cancelled keeps the earlier deadline.
        """
        err: ProtocolError | None = None
        grace_s = _finite_range(grace_s, 0.0, MAX_GRACE_S)
        with self._lock:
            try:
                job = self._find(job_id)
                if job.state in TERMINAL_STATES:
                    raise ProtocolError(ErrorCode.CONFLICT, f"job {job_id} already ended ({job.state}); "
                                        "there is nothing to cancel", "job")
            except ProtocolError as e:
                self._refused("cancel", job_id, actor, e)
                err = e
            if err is not None:
                info = None
            elif job.state == "queued":
                self._drop_image(job)
                self._transition(job, job.state, "cancelled", actor, f"cancelled by {actor or 'a client'} while queued")
                job.ended_s = self._clock()
                self._save(job)
                self._action(job, "cancel", actor, True, f"cancelled {job_id} (was queued)")
                self._schedule()
                info = self._info(job)
            else:
                info = None
                if not job.cancelling:
                    job.cancelling = True
                    job.cancel_actor = actor
                    job.reason = f"cancelled by {actor or 'a client'}"
                    if job.state == "paused":
                        self._kill_now(job)
                    else:
                        job.kill_at = time.monotonic() + grace_s
                        self._signal_job(job, signal.SIGTERM)
        if err is not None:
            self._flush()
            raise err
        if info is not None:
            self._flush()
            return info
        if self._cancel_waiters.acquire(blocking=False):
            try:
                deadline = time.monotonic() + min(grace_s, CANCEL_REPLY_WAIT_S)
                while time.monotonic() < deadline and not self._closing.is_set():
                    with self._lock:
                        if job.state in TERMINAL_STATES or not self._pids(job):
                            break
                    time.sleep(0.02)
            finally:
                self._cancel_waiters.release()
        with self._lock:
            due = job.kill_at is None or time.monotonic() >= job.kill_at
            if job.state not in TERMINAL_STATES and due and self._pids(job):
                self._kill_now(job)
            gone = job.state in TERMINAL_STATES or not self._pids(job)
        if not gone:
            with self._lock:
                self._action(job, "cancel", actor, True, f"cancel {job_id}: SIGTERM sent; SIGKILL in "
                             f"{max(0.0, (job.kill_at or 0) - time.monotonic()):.0f} s unless it exits first",
                             {"pending": True})
                info = self._info(job)
            self._flush()
            return info
        self._wait_exit_file(job)
        with self._lock:
            self._end_cancelled(job, actor)
            info = self._info(job)
        self._flush()
        return info

    def _end_cancelled(self, job: _Job, actor: str) -> None:
        """Record the end of a cancelled job whose processes are gone (call with the lock held)."""
        if job.state not in TERMINAL_STATES:
            exit_info = self._read_exit(job) or {}
            self._finish(job, "cancelled", exit_info.get("exit_code"), job.reason, actor)
        self._action(job, "cancel", actor, job.state == "cancelled", f"cancel {job.id}: {job.state}")
        job.kill_at = None
        self._schedule()

    def _cancel_due(self) -> None:
        """SIGKILL cancelled jobs whose grace period is over (from ``tick``, lock held)."""
        now = time.monotonic()
        for job in self._jobs.values():
            if job.cancelling and job.kill_at is not None and job.state in LIVE_STATES:
                if now >= job.kill_at and self._pids(job):
                    self._kill_now(job)
                if not self._pids(job):
                    job.kill_at = None
                    self._wait_exit_file(job)
                    self._end_cancelled(job, job.cancel_actor)

    def _create_job_dir(self, job: _Job) -> None:
        """Make the job's dir and its first record (job.json, jobs.db row): a job exists only once
        it is on disk. Raises StoreError."""
        try:
            statedir.make_traversable_dir(job.job_dir)
        except OSError as e:
            raise store_error(job.job_dir, "create the job dir", e) from None
        self._save(job, required=True)

    def _store_refusal(self, e: StoreError | ProtocolError) -> ProtocolError:
        if isinstance(e, ProtocolError):
            return e
        return ProtocolError(ErrorCode.UNAVAILABLE, f"{e.message}; the job was not submitted", "spec")

    # ---- migration hooks (agentd.control.migration SourceJobs / TargetJobs) -------------
    def checkpoint_dir(self, job_id: str) -> Path:
        """The job's AGENTD_CHECKPOINT_DIR."""
        with self._lock:
            return self._find(job_id).checkpoint_dir

    def checkpoint_handler_missing(self, job_id: str) -> str | None:
        """None when a process of the job's process group catches its contract signal (so the
        signal asks for a checkpoint instead of killing the job); else what is wrong, in words."""
        with self._lock:
            job = self._find(job_id)
            if job.spec.checkpoint is None or job.pid is None:
                return f"job {job_id} has no checkpoint contract or no process"
            name = job.spec.checkpoint.signal
            group = {p for p in self._pids(job) if procs.process_group(p) == job.pid}
        why = procs.why_signal_unhandled(group, signal_number(name), name)
        return f"job {job_id} {why}" if why else None

    def begin_checkpoint(self, job_id: str, actor: str = "") -> None:
        """Thaw if paused, set ``checkpointing`` and signal the job's process group.

        From now on the job's exit only records its exit code; another hook decides its state.
        """
        with self._lock:
            job = self._find(job_id)
            if job.spec.checkpoint is None:
                raise ProtocolError(ErrorCode.INVALID, f"job {job_id} has no checkpoint contract; it can only "
                                    "be migrated with CRIU or restarted from scratch", "job")
            if job.cancelling or job.exited or job.state not in ("running", "paused", "checkpointing"):
                raise ProtocolError(ErrorCode.CONFLICT, f"job {job_id} is {job.state}"
                                    f"{' and being cancelled' if job.cancelling else ''}; only a running or "
                                    "paused job can checkpoint", "job")
            self._freeze(job, False)  # a frozen job cannot handle the signal (thaw whatever the state says)
            job.held = True
            sig = signal_number(job.spec.checkpoint.signal)
            if job.state != "checkpointing":
                self._transition(job, job.state, "checkpointing", actor, "checkpoint requested")
            else:
                self._save(job)
            # Once, to the process group only: a second signal landing while the job exits after
            # writing its checkpoint can kill it (Python restores default handlers at shutdown).
            try:
                os.killpg(job.pid, sig)  # type: ignore[arg-type]
            except ProcessLookupError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(job.pid, sig)  # type: ignore[arg-type]
        self._flush()

    def criu_obstacle(self, job_id: str) -> str | None:
        """None when ``criu dump`` of the job's main process carries every process of the job;
        else why not, naming the processes it would leave behind (pid and command). CRIU dumps
        one process tree; a daemon that double-forked out of it was reparented to the shim
        (the subreaper), is still in the job's cgroup, and would be lost."""
        with self._lock:
            job = self._find(job_id)
            if job.pid is None:
                return None
            members = self._pids(job)
            root = job.pid
        left = sorted(procs.outside_tree(root, members))
        if not left:
            return None
        named = ", ".join(f"{p} ({procs.command_name(p) or '?'})" for p in left[:10])
        more = f" and {len(left) - 10} more" if len(left) > 10 else ""
        return (f"job {job_id} has {len(left)} process{'es' if len(left) != 1 else ''} outside the process tree of "
                f"its main process {root} that CRIU would leave behind (they left the job's session, e.g. "
                f"double-forked daemons): {named}{more}")

    def criu_dump(self, job_id: str, images_dir: Path, actor: str = "") -> None:
        """Dump a running or paused job with CRIU into ``images_dir``; its processes end with the
        dump, and from then on its exit is only recorded (as after a checkpoint). Raises
        ProtocolError when it cannot be dumped: the job then runs on as it was."""
        with self._lock:
            job = self._find(job_id)
            if job.cancelling or job.exited or job.state not in ("running", "paused", "checkpointing") or job.pid is None:
                raise ProtocolError(ErrorCode.CONFLICT, f"job {job_id} is {job.state}; only a running or paused "
                                    "job can be dumped", "job")
        # Again right before the dump: the job may have forked a daemon since the request.
        obstacle = self.criu_obstacle(job_id)
        if obstacle:
            raise ProtocolError(ErrorCode.INVALID, f"{obstacle}; nothing was dumped", "job")
        with self._lock:
            job = self._find(job_id)
            was_paused = job.state == "paused" or (job.state == "checkpointing" and self._is_frozen(job))
            self._freeze(job, False)  # ptrace cannot seize a frozen task
            job.held = True
            if job.state != "checkpointing":
                self._transition(job, job.state, "checkpointing", actor, "CRIU dump")
            pid = job.pid
        self._flush()
        try:
            criu.dump(pid, images_dir)
        except criu.CriuError as exc:
            self.abandon_checkpoint(job_id, exc.message, was_paused)
            raise ProtocolError(ErrorCode.FAILED, exc.message, "job") from None

    def wait_exit(self, job_id: str, timeout_s: float) -> int | None:
        """Wait until the job's main process has exited; its exit code, or None on timeout."""
        with self._lock:
            job = self._find(job_id)
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                if job.state in LIVE_STATES and not job.exited:
                    self._check_exit(job)
                if job.exited or job.state in TERMINAL_STATES:
                    return job.exit_code if job.exit_code is not None else -1
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)

    def stop(self, job_id: str, grace_s: float) -> None:
        """Kill the job (SIGTERM, SIGKILL after ``grace_s``) without making it terminal."""
        with self._lock:
            job = self._find(job_id)
            if job.state not in LIVE_STATES or job.exited:
                return
            job.held = True
            if job.state == "paused":
                self._kill_now(job)
            else:
                self._signal_job(job, signal.SIGTERM)
        deadline = time.monotonic() + max(0.0, grace_s)
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pids(job):
                    break
            time.sleep(0.02)
        with self._lock:
            self._kill_now(job)
        self._wait_exit_file(job)
        with self._lock:
            result = self._read_exit(job) or {}
            self._record_exit(job, result.get("exit_code"))
        self._flush()

    def abandon_checkpoint(self, job_id: str, reason: str, paused: bool) -> JobInfo:
        """The job did not checkpoint in time and still runs: back to running (or paused)."""
        with self._lock:
            job = self._find(job_id)
            if job.state != "checkpointing" or job.exited:
                raise ProtocolError(ErrorCode.CONFLICT, f"job {job_id} is {job.state}"
                                    f"{' and has exited' if job.exited else ''}; there is no running "
                                    "checkpoint to abandon", "job")
            job.reason = reason
            job.held = False
            self._transition(job, "checkpointing", "running", "", reason)
            if paused:
                self._freeze(job, True)
                self._transition(job, "running", "paused", "", reason)
            info = self._info(job)
        self._flush()
        return info

    def restart_local(self, job_id: str, reason: str, paused: bool, from_checkpoint: bool,
                      restore_images: Path | None = None) -> JobInfo:
        """Start the same job id here again (AGENTD_RESUME=1 from its checkpoint when asked, or
        restored from the CRIU image ``restore_images``)."""
        with self._lock:
            job = self._find(job_id)
            if job.state in TERMINAL_STATES or (job.state in LIVE_STATES and not job.exited):
                raise ProtocolError(ErrorCode.CONFLICT, f"job {job_id} is {job.state}"
                                    f"{' with live processes; stop it first' if job.state in LIVE_STATES else ''}"
                                    "; it cannot be restarted here", "job")
            job.held = False
            ckpt = job.checkpoint_dir
            job.resume = from_checkpoint and ckpt.is_dir() and any(ckpt.iterdir())
            job.restore_images = str(restore_images or "")
            job.pause_on_start = paused
            job.reason = reason
            gpus = list(job.gpus)
            self._transition(job, job.state, "queued", "", reason)
            if len(gpus) == job.spec.gpus and not set(gpus) & set(self._used_gpus(but=job)):
                self._start(job, gpus)  # its GPUs were kept for it
            self._schedule()
            info = self._info(job)
        self._flush()
        return info

    def hold_queued(self, job_id: str) -> None:
        """Take a queued job out of scheduling (state ``migrating``); CONFLICT if it started."""
        with self._lock:
            job = self._find(job_id)
            if job.state != "queued":
                raise ProtocolError(ErrorCode.CONFLICT, f"job {job_id} is {job.state}, not queued", "job")
            job.held = True
            self._transition(job, "queued", "migrating", "", "held for migration")
        self._flush()

    def requeue(self, job_id: str, reason: str) -> JobInfo:
        """Put a held queued job back in the queue (the migration failed)."""
        with self._lock:
            job = self._find(job_id)
            if job.state != "migrating" or job.pid is not None:
                raise ProtocolError(ErrorCode.CONFLICT, f"job {job_id} is {job.state}, not a held queued job", "job")
            job.reason = reason
            job.held = False
            self._transition(job, "migrating", "queued", "", reason)
            self._schedule()
            info = self._info(job)
        self._flush()
        return info

    def update_migration(self, job_id: str, migration: dict[str, Any], state: str | None = None) -> None:
        """Set JobInfo.migration (and the state when given) and publish the change."""
        with self._lock:
            job = self._find(job_id)
            job.migration = dict(migration)
            if state is not None and state != job.state and job.state not in TERMINAL_STATES:
                self._transition(job, job.state, state, "", str(migration.get("phase", "")))
            else:
                self._save(job)
                self._pending.append(self._info(job))
        self._flush()

    def finish_migrated(self, job_id: str, migrated_to: str, reason: str) -> JobInfo:
        """Terminal state ``migrated`` with JobInfo.migrated_to set."""
        with self._lock:
            job = self._find(job_id)
            if job.state in TERMINAL_STATES:
                raise ProtocolError(ErrorCode.CONFLICT, f"job {job_id} already ended ({job.state})", "job")
            job.migrated_to = migrated_to
            job.held = False
            self._finish(job, "migrated", job.exit_code, reason, "")
            self._schedule()
            info = self._info(job)
        self._flush()
        return info

    def admission(self, spec: JobSpec) -> tuple[bool, str]:
        """Can this node take ``spec``: (will_queue, message). Raises ProtocolError(INVALID) if never."""
        validate_spec(spec, gpu_count=self.gpu_count, cpu_count=self.cpu_count, mem_total_bytes=self.mem_total_bytes)
        with self._lock:
            free = self._free_gpus()
            waiting = len(self._queue())
            if waiting or len(free) < spec.gpus or not self._fits_cpu_mem_spec(spec):
                return True, (f"node {self.node} has {len(free)} free GPUs and {waiting} queued jobs; "
                              "the job will queue")
            return False, f"node {self.node} can start the job now"

    def start_resumed(self, spec: JobSpec, checkpoint_dir: Path | None, resumed_from: str, paused: bool,
                      criu_image: bool = False, lineage: list[str] | None = None,
                      first_submitted_s: float = 0.0) -> JobInfo:
        """Create a job from ``spec`` (priority, limits and labels as the job had them when it
        left); with ``checkpoint_dir`` adopt (rename) it and start with AGENTD_RESUME=1, or, with
        ``criu_image``, restore the CRIU image it holds (deleted once restored, or when the job
        ends first). ``lineage``/``first_submitted_s``: the job's identity so far."""
        with self._lock:
            try:
                n = self._allocate_number()
            except StoreError as e:
                raise self._store_refusal(e) from None
            job_id = f"{self.node}.{n}"
            ckpt = self.state_dir / "checkpoints" / job_id
            if checkpoint_dir is not None:
                ckpt.parent.mkdir(parents=True, exist_ok=True)
                os.replace(checkpoint_dir, ckpt)
                try:
                    run_as = self._run_as(spec)
                except KeyError:
                    run_as = None  # the launch fails and says why
                if run_as is not None and not criu_image:
                    # received as root; no process of the job exists yet, so nothing can move under the walk
                    statedir.hand_over_tree(ckpt, run_as.pw_uid, run_as.pw_gid)
            job = _Job(n=n, id=job_id, node=self.node, spec=spec, state="queued", priority=spec.priority,
                       submitted_s=self._clock(), job_dir=self.state_dir / "jobs" / str(n), checkpoint_dir=ckpt,
                       resumed_from=resumed_from, resume=checkpoint_dir is not None and not criu_image,
                       counters=set(spec.counters), pause_on_start=paused,
                       restore_images=str(ckpt) if criu_image and checkpoint_dir is not None else "",
                       lineage=trim_lineage(list(lineage or [resumed_from])),
                       first_submitted_s=float(first_submitted_s or 0.0))
            try:
                self._create_job_dir(job)
            except StoreError as e:
                raise self._store_refusal(e) from None
            self._jobs[job_id] = job
            self._transition(job, "", "queued", "", f"continues {resumed_from}")
            self._schedule()
            info = self._info(job)
        self._flush()
        return info

    def held_image_bytes(self) -> int:
        """Bytes of CRIU images held for jobs not restored yet (they count against the quota)."""
        with self._lock:
            dirs = [Path(j.restore_images) for j in self._jobs.values() if j.restore_images and j.state == "queued"]
        total = 0
        for d in dirs:
            with contextlib.suppress(OSError):
                for f in d.rglob("*"):
                    with contextlib.suppress(OSError):
                        if f.is_file() and not f.is_symlink():
                            total += f.stat().st_size
        return total

    def _drop_image(self, job: _Job) -> None:
        """Delete the job's CRIU image: restored, or the job ended first (lock held)."""
        if not job.restore_images:
            return
        image = Path(job.restore_images)
        job.restore_images = ""
        # Only what agentd made: images live in its state dir (received ones under
        # checkpoints/, a source's own under migrations/outgoing/).
        if self.state_dir in image.parents:
            shutil.rmtree(image, ignore_errors=True)
        else:
            log.warning("job %s: not deleting CRIU image %s outside %s", job.id, image, self.state_dir)

    def find_by_label(self, key: str, value: str) -> JobInfo | None:
        """The newest job whose spec has label ``key=value``."""
        with self._lock:
            for job in sorted(self._jobs.values(), key=lambda j: -j.n):
                if job.spec.labels.get(key) == value:
                    return self._info(job)
        return None

    def tick(self, gpu_mem_by_job: Mapping[str, int] | None = None) -> None:
        """Reap exits, drain reports, record GPU memory, start queued jobs. Call every interval."""
        with self._lock:
            self._retry_store()
            self._reap_children()
            if self._inbox is not None:  # before exits: a job's last reports still count
                members: dict[str, set[int]] = {}
                for msg in self._inbox.drain():
                    try:
                        job = self._job_of_report(msg, members)
                        if job is not None:
                            self._apply_report(job, msg)
                    except (TypeError, ValueError, OverflowError, AttributeError) as e:
                        # a job's bad report never stalls the bookkeeping of every job
                        self._inbox.count_bad(f"{type(e).__name__}: {e}")
            self._cancel_due()
            for job in list(self._jobs.values()):
                if job.state in LIVE_STATES and not job.exited:
                    self._check_exit(job)
            if gpu_mem_by_job is not None:
                for job in self._jobs.values():
                    if job.state in LIVE_STATES:
                        new = int(gpu_mem_by_job.get(job.id, 0))
                        if new != job.gpu_mem_bytes:
                            job.gpu_mem_bytes = new
                            if job.state == "paused":
                                self._pending.append(self._info(job))
            self._schedule()
            if time.monotonic() >= self._next_retention:
                self._next_retention = time.monotonic() + min(RETENTION_CHECK_S, max(1.0, self.retention_s / 2))
                self._age_out()
        self._flush()

    def _age_out(self) -> None:
        """Forget ended jobs older than ``retention_s`` and all but the newest ``max_ended_jobs``
        ended ones: out of memory, out of the store, their job dirs deleted (lock held)."""
        ended = sorted((j for j in self._jobs.values() if j.state in TERMINAL_STATES),
                       key=lambda j: (j.ended_s or 0.0, j.n), reverse=True)
        cutoff = self._clock() - self.retention_s
        old = [j for i, j in enumerate(ended) if i >= self.max_ended_jobs or (j.ended_s or 0.0) < cutoff]
        if not old:
            return
        for job in old:
            del self._jobs[job.id]
            for d, parent in ((job.job_dir, "jobs"), (job.checkpoint_dir, "checkpoints")):
                if d.parent == self.state_dir / parent:  # never outside our own tree
                    shutil.rmtree(d, ignore_errors=True)
        if self._store is not None:
            self._store.forget([j.id for j in old])
        log.info("forgot %d ended jobs past their retention (%g s, at most %d kept)",
                 len(old), self.retention_s, self.max_ended_jobs)

    # ---- action plumbing -------------------------------------------------------------
    def _do(self, action: str, job_id: str, actor: str, fn: Callable[[_Job, str], JobInfo]) -> JobInfo:
        err: ProtocolError | None = None
        with self._lock:
            try:
                info = fn(self._find(job_id), actor)
            except ProtocolError as e:
                self._refused(action, job_id, actor, e)
                err = e
        self._flush()
        if err is not None:
            raise err
        return info

    def _refused(self, action: str, job_id: str, actor: str, e: ProtocolError) -> None:
        self._emit(Event(wall_s=self._clock(), node=self.node, kind="action", job_id=job_id, actor=actor, ok=False,
                         message=f"{action} {job_id} refused: {e.message}",
                         data={"action": action, "code": int(e.code), "field": e.field}))

    def _pause(self, job: _Job, actor: str) -> JobInfo:
        if job.state == "paused":
            self._action(job, "pause", actor, True, f"{job.id} is already paused")
            return self._info(job)
        self._require_live(job, "pause", "running")
        try:
            self._freeze(job, True)
        except (OSError, TimeoutError) as e:
            with contextlib.suppress(OSError, TimeoutError):
                self._freeze(job, False)
            raise ProtocolError(ErrorCode.FAILED, f"could not pause job {job.id}: {e}; it is still running", "job") from e
        self._transition(job, job.state, "paused", actor, f"paused by {actor or 'a client'}")
        self._save(job)
        self._action(job, "pause", actor, True, f"paused {job.id}")
        return self._info(job)

    def _resume(self, job: _Job, actor: str) -> JobInfo:
        if job.state == "running" and not job.cancelling:
            self._action(job, "resume", actor, True, f"{job.id} is already running")
            return self._info(job)
        self._require_live(job, "resume", "paused")
        try:
            self._freeze(job, False)
        except (OSError, TimeoutError) as e:
            raise ProtocolError(ErrorCode.FAILED, f"could not resume job {job.id}: {e}", "job") from e
        self._transition(job, job.state, "running", actor, f"resumed by {actor or 'a client'}")
        self._save(job)
        self._action(job, "resume", actor, True, f"resumed {job.id}")
        return self._info(job)

    def _set_priority(self, job: _Job, priority: int, actor: str) -> JobInfo:
        if job.state in TERMINAL_STATES:
            raise ProtocolError(ErrorCode.CONFLICT, f"job {job.id} already ended ({job.state}); its priority "
                                "can no longer change", "job")
        old = job.priority
        job.priority = priority
        if job.state in LIVE_STATES:
            self._apply_priority(job)
        self._save(job)
        self._store_transition(job, job.state, job.state, actor, f"priority {old:+d} -> {priority:+d}")
        self._action(job, "priority", actor, True, f"priority of {job.id} {old:+d} -> {priority:+d}",
                     {"old": old, "new": priority})
        if job.state == "queued":
            self._schedule()
            for other in self._jobs.values():  # everyone's queue position may have moved
                if other.state == "queued" and other is not job:
                    self._pending.append(self._info(other))
        self._pending.append(self._info(job))
        return self._info(job)

    def _require_live(self, job: _Job, action: str, want: str) -> None:
        if job.cancelling and job.state not in TERMINAL_STATES:
            raise ProtocolError(ErrorCode.CONFLICT, f"job {job.id} is being cancelled; it cannot {action}", "job")
        if job.state == want:
            return
        if job.state == "queued":
            msg = (f"job {job.id} is queued, not {want}; it starts when its resources are free "
                   "(raise its priority or cancel it)")
        elif job.state in TERMINAL_STATES:
            msg = f"job {job.id} already ended ({job.state}); it cannot {action}"
        else:
            msg = f"job {job.id} is {job.state}; it cannot {action} now"
        raise ProtocolError(ErrorCode.CONFLICT, msg, "job")

    # ---- mechanics -------------------------------------------------------------------
    def _freeze(self, job: _Job, frozen: bool) -> None:
        if job.cgroup is not None and job.cgroup.has_freezer():
            job.cgroup.set_frozen(frozen)
            return
        sig = signal.SIGSTOP if frozen else signal.SIGCONT
        pids = self._pids(job)
        with contextlib.suppress(ProcessLookupError):
            if job.pid:
                os.killpg(job.pid, sig)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while frozen:  # SIGSTOP is asynchronous: wait until every process reads stopped
            states = {procs.state_of(p) for p in pids}
            if states <= {"T", "t", None, "Z"}:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"processes of {job.id} did not stop")
            time.sleep(0.002)

    def _pids(self, job: _Job) -> set[int]:
        """Live processes of the job (zombies excluded)."""
        if job.state not in LIVE_STATES:
            return set()
        if job.cgroup is not None:
            found = procs.live(job.cgroup.pids())
        elif job.pid and procs.is_alive(job.pid, job.start_ticks):
            found = procs.session_pids(job.pid)
        else:
            found = set()
        if procs.is_alive(job.pid, job.start_ticks):
            found.add(job.pid)  # type: ignore[arg-type]
        return found

    def _signal_job(self, job: _Job, sig: int) -> None:
        if job.pid and procs.is_alive(job.pid, job.start_ticks):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(job.pid, sig)
        for pid in self._pids(job):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _kill_now(self, job: _Job) -> None:
        """SIGKILL every process of the job (frozen first where a freezer exists), then thaw."""
        if job.cgroup is not None:
            job.cgroup.kill_all(KILL_TIMEOUT_S)
        deadline = time.monotonic() + KILL_TIMEOUT_S
        while True:
            pids = self._pids(job)
            if not pids or time.monotonic() > deadline:
                break
            self._signal_job(job, signal.SIGKILL)
            if job.cgroup is None:
                self._signal_job(job, signal.SIGCONT)
            time.sleep(0.01)

    def _apply_priority(self, job: _Job) -> None:
        if job.cgroup is not None:
            job.cgroup.set_priority(job.priority)
        nice = priority_nice(job.priority)
        for pid in self._pids(job):
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, pid, nice)
        if (job.cgroup is None or not job.cgroup.has_cpu_weight()) and job.pid:
            # Without a cpu cgroup the job's session is its own autogroup: nice that instead.
            with contextlib.suppress(OSError):
                Path(f"/proc/{job.pid}/autogroup").write_text(str(nice))

    def _launch(self, job: _Job, gpus: list[int]) -> None:
        """Start a queued job through the shim. On failure the job ends as failed; when the launch
        cannot be journaled (full disk) the job stays queued and is tried again later."""
        for stale in ("pid.json", "exit.json"):
            with contextlib.suppress(OSError):
                (job.job_dir / stale).unlink()
        job.gpus = gpus
        job.cgroup, job.control = None, "pgroup"
        if self.layout is not None:
            stale_pids = self._stale_cgroup_pids(job)
            if stale_pids:
                self._launch_failed(job, f"its cgroup job-{job.n} under {self.layout.bases} already holds processes "
                                    f"{sorted(stale_pids)} that are not this job's; agentd does not adopt them "
                                    "(end them, then resubmit)")
                return
            try:
                job.cgroup = self.layout.create(f"job-{job.n}")
                job.control = self.layout.control
                job.cgroup.set_priority(job.priority)
                job.cgroup.set_limits(job.spec.cpus, job.spec.memory_bytes)
            except OSError as e:
                log.warning("cannot create a cgroup for %s (%s); using process-group control", job.id, e)
                job.cgroup, job.control = None, "pgroup"
        try:
            run_as = self._run_as(job.spec)
        except KeyError:
            self._launch_failed(job, f"user {job.spec.user!r} no longer exists on node {self.node}")
            return
        try:
            self._prepare_checkpoint_dir(job, run_as)
        except OSError as e:
            self._launch_failed(job, f"cannot prepare the checkpoint dir {job.checkpoint_dir}: {e.strerror or e}")
            return
        env = self._base_env(run_as)
        env.update(job.spec.env)
        env.update({
            "AGENTD_JOB_ID": job.id,
            "AGENTD_REPORT": str(self.report_path),
            "AGENTD_CHECKPOINT_DIR": str(job.checkpoint_dir),
            "AGENTD_RESUME": "1" if job.resume else "0",
            "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus),
        })
        if job.spec.counters:
            env["AGENTD_COUNTERS"] = ",".join(job.spec.counters)
        if job.spec.checkpoint is not None:
            env["AGENTD_CHECKPOINT_SIGNAL"] = signal.Signals(signal_number(job.spec.checkpoint.signal)).name
        if job.cgroup is not None:
            env["AGENTD_CGROUP_DIRS"] = os.pathsep.join(str(p) for k, p in job.cgroup.paths.items()
                                                        if job.cgroup.version == 2 or k != "unified")
        cwd = job.spec.cwd if job.spec.cwd is not None or run_as is None else run_as.pw_dir
        launch = {"job_id": job.id, "argv": job.spec.argv, "shell": job.spec.shell, "cwd": cwd,
                  "user": job.spec.user, "env": env, "nice": priority_nice(job.priority),
                  "run_as": None if run_as is None else {"name": run_as.pw_name, "uid": run_as.pw_uid,
                                                         "gid": run_as.pw_gid},
                  "autogroup_nice": priority_nice(job.priority)
                  if job.cgroup is None or not job.cgroup.has_cpu_weight() else None,
                  "cgroup_procs": job.cgroup.procs_files() if job.cgroup else [],
                  "report_path": str(self.report_path) if self._inbox else None,
                  "log_max_bytes": LOG_MAX_BYTES, "log_keep": LOG_KEEP}
        if job.restore_images:
            try:
                launch["criu_restore"] = criu.restore_launch(Path(job.restore_images))
            except (criu.CriuError, OSError, ValueError) as e:
                self._launch_failed(job, f"cannot restore the job's CRIU image: {e}")
                return
        # Journal the launch before anything can start the job (see the module docstring).
        launch["launch_token"] = job.launch_token = uuid.uuid4().hex
        job.shim_pid = None
        try:
            self._save(job, required=True)
            statedir.write_private(job.job_dir / "launch.json", json.dumps(launch).encode())
        except (StoreError, OSError) as e:
            self._defer_launch(job, e)
            return
        shim_log = os.open(job.job_dir / "shim.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        try:
            shim_pid = os.posix_spawn(sys.executable, [sys.executable, "-I", "-S", str(SHIM_PATH), str(job.job_dir)],
                                      {"PATH": os.environ.get("PATH", os.defpath)}, setsid=True,
                                      # whatever thread launches, the shim starts with no blocked
                                      # signals and default SIGCHLD/SIGPIPE handling
                                      setsigmask=(), setsigdef=(signal.SIGCHLD, signal.SIGPIPE),
                                      file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                                                    (os.POSIX_SPAWN_DUP2, shim_log, 1),
                                                    (os.POSIX_SPAWN_DUP2, shim_log, 2)])
        except OSError as e:
            self._launch_failed(job, f"could not start the job's shim: {e}")
            return
        finally:
            os.close(shim_log)
        self._children.add(shim_pid)
        job.shim_pid = shim_pid
        deadline = time.monotonic() + SHIM_START_TIMEOUT_S
        pid_file = job.job_dir / "pid.json"
        while not pid_file.exists():
            ended = _shim_ended(shim_pid)  # waitpid, not /proc: a reused pid cannot pass for it
            if ended is not None:
                self._children.discard(shim_pid)
                if pid_file.exists():
                    break  # the job started and ended at once: exit.json tells the rest
            if ended is not None or time.monotonic() > deadline:
                detail = (job.job_dir / "shim.log").read_text(errors="replace")[-500:].strip()
                why = ended if ended is not None else f"no job after {SHIM_START_TIMEOUT_S:g} s"
                self._launch_failed(job, f"the job's shim did not start ({why}): {detail or 'no output'}")
                return
            time.sleep(0.003)
        data = json.loads(pid_file.read_text())
        job.pid, job.start_ticks = data["pid"], data["start_ticks"]
        job.started_s = self._clock()
        restored = bool(job.restore_images)
        how = "restored from its CRIU image" if restored else "started"
        self._drop_image(job)  # criu restore -d has returned: the image is spent
        job.launch_token = None
        self._transition(job, job.state, "running", "", f"{how} on GPUs {gpus}" if gpus else how)
        if restored:
            # The restored tasks keep the nice they had on the source: give them this job's.
            self._apply_priority(job)
        self._save(job)

    def _defer_launch(self, job: _Job, e: Exception) -> None:
        """The launch could not be journaled: nothing was started; the job stays queued."""
        job.launch_token = None
        if job.cgroup is not None:
            job.cgroup.remove()
        job.cgroup, job.control, job.gpus = None, "", []
        message = e.message if isinstance(e, StoreError) else str(store_error(job.job_dir, "write launch.json", e))
        if job.reason != f"not started yet: {message}":
            job.reason = f"not started yet: {message}"
            log.warning("job %s %s", job.id, job.reason)
            self._pending.append(self._info(job))

    def _stale_cgroup_pids(self, job: _Job) -> set[int]:
        """Live processes already in this job's cgroup dirs (left by a job whose number was
        reused after a lost state store, or by anyone else): never adopted."""
        assert self.layout is not None
        found: set[int] = set()
        for base in self.layout.bases.values():
            path = base / f"job-{job.n}"
            if path.is_dir():
                found |= procs.live(JobCgroup(version=self.layout.version, paths={"x": path}).pids())
        return found

    def _run_as(self, spec: JobSpec) -> pwd.struct_passwd | None:
        """The account a job drops to, or None when it runs as agentd's own user (today's root
        jobs: no privilege boundary is crossed, so they keep agentd's environment and cwd)."""
        if spec.user is None:
            return None
        pw = pwd.getpwnam(spec.user)  # checked at submit; a user deleted since fails the launch
        return None if pw.pw_uid == os.geteuid() else pw

    def _base_env(self, run_as: pwd.struct_passwd | None) -> dict[str, str]:
        """The environment a job starts from, before its spec's env and the AGENTD_* variables.

        A job of agentd's own user inherits agentd's environment (as before). A job of another
        user gets none of it (it may hold the service's secrets): only PATH, the locale, and
        that user's HOME/USER/LOGNAME/SHELL, as a login would give.
        """
        if run_as is None:
            env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")}
        else:
            env = {k: v for k, v in os.environ.items() if k == "LANG" or k.startswith("LC_")}
            env.update(PATH=os.environ.get("PATH", os.defpath), HOME=run_as.pw_dir, USER=run_as.pw_name,
                       LOGNAME=run_as.pw_name, SHELL=run_as.pw_shell or "/bin/sh")
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _prepare_checkpoint_dir(self, job: _Job, run_as: pwd.struct_passwd | None) -> None:
        """Create the job's AGENTD_CHECKPOINT_DIR: 0700, owned by the job's owner so it can write
        it. A CRIU image stays root's: root restores from it, and an image the user could edit
        would let them choose the credentials of the restored processes."""
        ckpt = job.checkpoint_dir
        ckpt.mkdir(parents=True, exist_ok=True)
        if job.restore_images:
            os.chown(ckpt, 0, 0, follow_symlinks=False)
            os.chmod(ckpt, 0o700)
            return
        if run_as is not None:
            # Only the top: its parent is root's, so the path cannot be swapped under us. Its
            # contents are the owner's already (written by the job or handed over by
            # start_resumed before any process of the job existed).
            os.chown(ckpt, run_as.pw_uid, run_as.pw_gid, follow_symlinks=False)
        os.chmod(ckpt, 0o700)

    def _launch_failed(self, job: _Job, reason: str) -> None:
        log.warning("job %s: %s", job.id, reason)
        self._finish(job, "failed", None, reason, "")

    def _schedule(self) -> None:
        """Start queued jobs in order (priority, then submit order) while their resources fit.

        Strict order: a job at the head that does not fit blocks the ones behind it, so a big job
        is never starved by a stream of small ones.
        """
        for job in self._queue():
            never = self._never_fits(job.spec)
            if never:  # e.g. the node restarted with fewer GPUs: it would block the queue forever
                self._finish(job, "failed", None, never, "")
                continue
            gpus = self._free_gpus()
            if len(gpus) < job.spec.gpus or not self._fits_cpu_mem_spec(job.spec):
                break
            self._start(job, gpus[: job.spec.gpus])
            if job.state == "queued":
                break  # its launch was deferred (full disk): keep the order

    def _never_fits(self, spec: JobSpec) -> str:
        """Why ``spec`` can never start on this node as it is now; "" when it can."""
        if spec.gpus > self.gpu_count:
            return (f"asks for {spec.gpus} GPUs but node {self.node} now has {self.gpu_count}; "
                    f"resubmit it with at most {self.gpu_count} GPUs or on another node")
        if spec.cpus and self.cpu_count and spec.cpus > self.cpu_count:
            return (f"asks for {spec.cpus:g} CPUs but node {self.node} now has {self.cpu_count}; "
                    "resubmit it with fewer CPUs or on another node")
        if spec.memory_bytes and self.mem_total_bytes and spec.memory_bytes > self.mem_total_bytes:
            return (f"asks for {spec.memory_bytes} bytes of memory but node {self.node} now has "
                    f"{self.mem_total_bytes}; resubmit it with less memory or on another node")
        return ""

    def _start(self, job: _Job, gpus: list[int]) -> None:
        job.exited, job.exit_code, job.held = False, None, False
        self._launch(job, gpus)
        if job.pause_on_start and job.state == "running":
            job.pause_on_start = False
            try:
                self._freeze(job, True)
                self._transition(job, "running", "paused", "", "paused on start")
            except (OSError, TimeoutError) as e:
                log.warning("could not pause %s on start: %s", job.id, e)

    def _queue(self) -> list[_Job]:
        return sorted((j for j in self._jobs.values() if j.state == "queued"), key=lambda j: (-j.priority, j.n))

    def _holding(self) -> list[_Job]:
        """Jobs that hold resources: live ones, and parked migrations (their GPUs wait for a restart)."""
        return [j for j in self._jobs.values() if j.state in LIVE_STATES or (j.state == "migrating" and j.gpus)]

    def _used_gpus(self, but: _Job | None = None) -> list[int]:
        return [g for j in self._holding() if j is not but for g in j.gpus]

    def _free_gpus(self) -> list[int]:
        used = set(self._used_gpus())
        return [g for g in range(self.gpu_count) if g not in used]

    def _fits_cpu_mem_spec(self, spec: JobSpec) -> bool:
        holding = self._holding()
        if spec.cpus and self.cpu_count:
            if sum(j.spec.cpus or 0 for j in holding) + spec.cpus > self.cpu_count:
                return False
        if spec.memory_bytes and self.mem_total_bytes:
            if sum(j.spec.memory_bytes or 0 for j in holding) + spec.memory_bytes > self.mem_total_bytes:
                return False
        return True

    def _reap_children(self) -> None:
        for pid in list(self._children):
            try:
                got, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                got = pid
            if got == pid:
                self._children.discard(pid)

    def _read_exit(self, job: _Job) -> dict[str, Any] | None:
        try:
            return json.loads((job.job_dir / "exit.json").read_text())
        except (OSError, ValueError):
            return None

    def _wait_exit_file(self, job: _Job) -> None:
        deadline = time.monotonic() + EXIT_FILE_WAIT_S
        while time.monotonic() < deadline and not (job.job_dir / "exit.json").exists():
            if not procs.is_alive(job.shim_pid):
                break
            time.sleep(0.01)

    def _check_exit(self, job: _Job) -> None:
        result = self._read_exit(job)
        if result is not None:
            self._finish_from_exit(job, result, "")
        elif not procs.is_alive(job.shim_pid) and not procs.is_alive(job.pid, job.start_ticks):
            if (job.state == "checkpointing" or job.held) and not job.cancelling:
                self._record_exit(job, None)
                return
            self._finish(job, "cancelled" if job.cancelling else "failed", None,
                         job.reason or "the job and its shim are gone; exit code unknown", "")

    def _finish_from_exit(self, job: _Job, result: dict[str, Any], suffix: str) -> None:
        code = result.get("exit_code")
        if (job.state == "checkpointing" or job.held) and not job.cancelling:
            self._record_exit(job, code)  # a migration hook decides what happens next
            return
        if job.cancelling:
            state, reason = "cancelled", job.reason
        elif code == 0:
            state, reason = "succeeded", "exit code 0"
        else:
            state = "failed"
            if result.get("signal"):
                reason = f"killed by {signal.Signals(result['signal']).name}"
                if self._oom_killed(job):
                    reason += " (out of memory)"
            else:
                reason = f"exit code {code}"
        self._finish(job, state, code, reason + suffix, "", ended_s=result.get("ended_s"))

    def _record_exit(self, job: _Job, code: int | None) -> None:
        """The job's processes are gone but it is not over (checkpoint or stop during migration)."""
        if job.cgroup is not None:
            job.cgroup.kill_all(KILL_TIMEOUT_S)
            job.cgroup.remove()
        job.exited = True
        job.exit_code = code
        self._save(job)
        self._pending.append(self._info(job))

    def _oom_killed(self, job: _Job) -> bool:
        if job.cgroup is None:
            return False
        for key, name in (("memory", "memory.oom_control"), ("unified", "memory.events")):
            path = job.cgroup.paths.get(key)
            if path is None:
                continue
            with contextlib.suppress(OSError, ValueError):
                for line in (path / name).read_text().splitlines():
                    k, _, v = line.partition(" ")
                    if k == "oom_kill" and int(v) > 0:
                        return True
        return False

    def _finish(self, job: _Job, state: str, exit_code: int | None, reason: str, actor: str,
                ended_s: float | None = None) -> None:
        """End a job: kill leftovers, remove its cgroup, free its resources, record it."""
        if job.state in TERMINAL_STATES:
            return
        if job.cgroup is not None:
            leftovers = procs.live(job.cgroup.pids())
            if leftovers:
                log.info("job %s ended with %d processes left; killing them", job.id, len(leftovers))
                job.cgroup.kill_all(KILL_TIMEOUT_S)
            job.cgroup.remove()
        elif job.pid:
            for pid in procs.session_pids(job.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._drop_image(job)
        job.exit_code = exit_code
        job.ended_s = ended_s or self._clock()
        job.gpu_mem_bytes = 0
        now = self._clock()
        for call in job.open_tools.values():
            job.tool_calls.append(msgspec.structs.replace(call, ended_s=now))
        job.open_tools.clear()
        self._transition(job, job.state, state, actor, reason)
        self._save(job)

    # ---- re-adoption -----------------------------------------------------------------
    def _adopt(self, info: JobInfo, n: int, runtime: dict[str, Any]) -> None:
        cg = None
        if runtime.get("cgroup"):
            ref = runtime["cgroup"]
            cg = JobCgroup(version=ref["version"], paths={k: Path(v) for k, v in ref["paths"].items()})
        job = _Job(n=n, id=info.id, node=info.node, spec=info.spec, state=info.state, priority=info.priority,
                   submitted_s=info.submitted_s, job_dir=Path(runtime.get("job_dir") or self.state_dir / "jobs" / str(n)),
                   checkpoint_dir=Path(runtime.get("checkpoint_dir") or self.state_dir / "checkpoints" / info.id),
                   started_s=info.started_s, ended_s=info.ended_s, pid=info.pid, shim_pid=runtime.get("shim_pid"),
                   start_ticks=runtime.get("start_ticks"), gpus=list(info.gpus), cgroup=cg, control=info.control,
                   exit_code=info.exit_code, reason=info.reason, metrics=dict(info.metrics),
                   counters=set(info.spec.counters), tool_calls=list(info.tool_calls), resumed_from=info.resumed_from,
                   resume=bool(runtime.get("resume")), migrated_to=info.migrated_to,
                   migration=dict(runtime.get("migration") or info.migration),
                   exited=bool(runtime.get("exited")), held=bool(runtime.get("held")),
                   pause_on_start=bool(runtime.get("pause_on_start")),
                   restore_images=str(runtime.get("restore_images") or ""),
                   launch_token=runtime.get("launch_token") or None,
                   lineage=list(info.lineage), first_submitted_s=info.first_submitted_s)
        self._jobs[job.id] = job
        if job.id in self._unsaved:
            self._save(job)  # recovered from its job dir: back into jobs.db
        if job.state == "queued" and job.launch_token:
            self._recover_launch(job)
        if job.state != "queued":
            self._drop_image(job)  # restored (or ended) while agentd was down: the image is spent
        if job.state not in LIVE_STATES or job.exited:
            return
        if job.shim_pid:
            self._children.add(job.shim_pid)  # ours only if we are its subreaper; else dropped on ECHILD
        result = self._read_exit(job)
        if result is not None:
            self._finish_from_exit(job, result, " (ended while agentd was down)")
            return
        if not procs.is_alive(job.pid, job.start_ticks):
            if (job.state == "checkpointing" or job.held) and not job.cancelling:
                self._record_exit(job, None)
                return
            self._finish(job, "failed", None, "ended while agentd was down; exit code unknown", "")
            return
        if job.state in ("running", "paused"):
            frozen = self._is_frozen(job)
            seen = "paused" if frozen else "running"
            if seen != job.state:
                self._transition(job, job.state, seen, "", f"found {seen} after agentd restart")
        self._save(job)
        self._emit(Event(wall_s=self._clock(), node=self.node, kind="job.state", job_id=job.id,
                         message=f"re-adopted {job.id} ({job.state}, pid {job.pid})",
                         data={"from": job.state, "to": job.state, "reason": "re-adopted after agentd restart"}))
        self._pending.append(self._info(job))

    def _recover_launch(self, job: _Job) -> None:
        """agentd died during this job's launch: find out whether the shim started it.

        Whoever creates ``claim-<token>`` first decides: we create it as ``revoked`` (the shim
        then refuses to start), or the shim already has it (the job started, or is starting).
        """
        token = job.launch_token
        link = job.job_dir / f"claim-{token}"
        try:
            os.symlink(f"revoked:{os.getpid()}", link)
            target = "revoked"
        except FileExistsError:
            try:
                target = os.readlink(link)
            except OSError as e:
                target = f"unreadable:{e}"
        except OSError as e:
            target = f"unreadable:{e}"
        if target.startswith("unreadable:"):
            # Neither claimed nor revocable: starting it again could run it twice.
            self._finish(job, "failed", None, f"agentd was killed while starting it and cannot tell whether it "
                         f"started ({link}: {target[11:]}); resubmit it if it did not run", "")
            return
        if target.startswith("revoked"):
            log.info("job %s: its launch before the agentd restart never started; starting it now", job.id)
            job.launch_token = None
            if job.cgroup is not None:
                job.cgroup.remove()
            job.cgroup, job.gpus = None, []
            self._save(job)
            return
        _, _, rest = target.partition(":")
        shim_pid_s, _, shim_ticks_s = rest.partition(":")
        shim_pid, shim_ticks = int(shim_pid_s or 0), int(shim_ticks_s or 0)
        job.shim_pid = shim_pid
        pid_file = job.job_dir / "pid.json"
        deadline = time.monotonic() + SHIM_START_TIMEOUT_S
        while not pid_file.exists() and time.monotonic() < deadline and procs.is_alive(shim_pid, shim_ticks):
            time.sleep(0.01)
        try:
            data = json.loads(pid_file.read_text())
        except (OSError, ValueError):
            data = None
        job.launch_token = None
        if data is None:
            if procs.is_alive(shim_pid, shim_ticks):
                with contextlib.suppress(OSError):
                    os.killpg(shim_pid, signal.SIGKILL)
            self._finish(job, "failed", None, "agentd was killed while starting it and its shim never started it; "
                         "resubmit it", "")
            return
        job.pid, job.start_ticks = data["pid"], data["start_ticks"]
        with contextlib.suppress(OSError):
            job.started_s = pid_file.stat().st_mtime
        gpus = f" on GPUs {job.gpus}" if job.gpus else ""
        self._transition(job, "queued", "running", "", f"started{gpus} (confirmed after an agentd restart)")

    def _is_frozen(self, job: _Job) -> bool:
        if job.cgroup is not None and job.cgroup.has_freezer():
            with contextlib.suppress(OSError):
                return job.cgroup.is_frozen()
            return False
        pids = self._pids(job)
        return bool(pids) and all(procs.state_of(p) in ("T", "t") for p in pids)

    # ---- reports ---------------------------------------------------------------------
    def _sent_by_job(self, job: _Job, msg: dict[str, Any], members: dict[str, set[int]]) -> bool:
        """Did the sender of ``msg`` (the kernel says its pid) belong to ``job``? Drops reports
        forged for another job. Judged by the sender's cgroups and session as the inbox read
        them when the datagram arrived; what cannot be verified is refused."""
        pid = msg.get("sender_pid")
        if not pid:
            return False
        if pid == job.shim_pid:
            return True
        if job.id not in members:
            members[job.id] = self._pids(job)
        if pid in members[job.id]:
            return True
        text = msg.get("sender_cgroup")
        if job.cgroup is not None:
            if not isinstance(text, str):
                return False
            mine = f"/agentd-{self.node}/job-{job.n}/"
            # a line is "id:controllers:path"; "/job-1/" must not match ".../job-12"
            return any(mine in line.split(":", 2)[-1] + "/" for line in text.splitlines())
        sid = msg.get("sender_sid")
        return sid is not None and sid == job.pid

    def _job_of_report(self, msg: dict[str, Any], members: dict[str, set[int]]) -> _Job | None:
        """The job a report is from: the one it names, if its sender belongs to it; else the
        live job the sender's process is in. A job restored from a CRIU image elsewhere keeps
        the environment it was started with, so it names its job id on that node."""
        pid = msg.get("sender_pid")
        named = self._jobs.get(msg.get("job", ""))
        if named is not None and self._sent_by_job(named, msg, members):
            return named
        if not pid:
            return None
        for job in self._jobs.values():
            if job is not named and job.state in LIVE_STATES:
                if job.id not in members:
                    members[job.id] = self._pids(job)
                if pid in members[job.id]:
                    return job
        return None

    def _apply_report(self, job: _Job, msg: dict[str, Any]) -> None:
        """Apply one report. Raises ValueError/TypeError for a malformed one (tick counts it)."""
        if job.state not in LIVE_STATES:
            return
        now = self._clock()
        wall = msg.get("wall_s")
        if wall is None:
            wall = now
        elif not _finite_number(wall) or abs(float(wall) - now) > MAX_REPORT_CLOCK_SKEW_S:
            raise ValueError(f"job {job.id}: report timestamp {str(wall)[:40]!r} is not a time near now")
        wall = float(wall)
        if msg.get("t") == "metric":
            values = msg.get("values") or {}
            if not isinstance(values, dict):
                raise TypeError(f"job {job.id}: metric values must be a name -> number table")
            refused = 0
            for k, v in values.items():
                if not _finite_number(v):
                    continue
                name = str(k)
                if not name or len(name) > MAX_METRIC_NAME_CHARS:
                    refused += 1
                    continue
                if name not in job.metrics and len(job.metrics) >= MAX_METRICS_PER_JOB:
                    refused += 1
                    continue
                job.metrics[name] = float(v)
            if refused:
                self._metric_refusals += refused
                if job.id not in self._metric_refusal_logged:
                    self._metric_refusal_logged.add(job.id)
                    log.warning("job %s reports more than %d metric names (or names over %d characters); "
                                "the extra ones are dropped", job.id, MAX_METRICS_PER_JOB, MAX_METRIC_NAME_CHARS)
            counters = msg.get("counters") or []
            if not isinstance(counters, list):
                raise TypeError(f"job {job.id}: counters must be a list of metric names")
            job.counters.update(c for c in counters if isinstance(c, str) and c in job.metrics)
        elif msg.get("t") == "tool":
            name, call_id = str(msg.get("name", "?"))[:MAX_NAME_CHARS], str(msg.get("id", ""))[:MAX_NAME_CHARS]
            if msg.get("phase") == "start":
                if call_id not in job.open_tools and len(job.open_tools) >= MAX_TOOL_CALLS:
                    raise ValueError(f"job {job.id}: more than {MAX_TOOL_CALLS} tool calls open at once")
                job.open_tools[call_id] = ToolCall(name=name, started_s=wall)
                self._emit(Event(wall_s=wall, node=self.node, kind="tool_call", job_id=job.id,
                                 message=f"{job.id} tool call {name} started", data={"phase": "start", "name": name}))
            elif msg.get("phase") == "end":
                start = job.open_tools.pop(call_id, None)
                call = ToolCall(name=name, started_s=start.started_s if start else wall, ended_s=wall,
                                exit_code=_opt_int(msg.get("exit_code")), cpu_s=_opt_float(msg.get("cpu_s")),
                                mem_peak_bytes=_opt_int(msg.get("mem_peak_bytes")))
                job.tool_calls.append(call)
                del job.tool_calls[:-MAX_TOOL_CALLS]
                self._emit(Event(wall_s=wall, node=self.node, kind="tool_call", job_id=job.id,
                                 message=f"{job.id} tool call {name} ended", ok=call.exit_code in (0, None),
                                 data={"phase": "end", **msgspec.structs.asdict(call)}))
                self._pending.append(self._info(job))

    # ---- records and notifications ---------------------------------------------------
    def _find(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no job {job_id!r} on node {self.node}; "
                                "list jobs with 'agentctl jobs'", "job")
        return job

    def _need_store(self) -> JobStore:
        if self._store is None:
            if self._started and self._store_down:
                raise ProtocolError(ErrorCode.UNAVAILABLE, f"node {self.node} runs degraded without its job store: "
                                    f"{self._store_down}", "spec")
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"job manager of node {self.node} is not started", "")
        return self._store

    def _info(self, job: _Job) -> JobInfo:
        position = None
        if job.state == "queued":
            position = next((i for i, j in enumerate(self._queue()) if j is job), None)
        calls = list(job.tool_calls) + list(job.open_tools.values())
        return JobInfo(id=job.id, node=job.node, name=job.spec.name or Path(job.spec.argv[0]).name if job.spec.argv else "",
                       state=job.state, spec=job.spec, priority=job.priority, pid=job.pid,  # type: ignore[arg-type]
                       owner=job.spec.user or self.own_user,
                       pids=sorted(self._pids(job)), gpus=list(job.gpus),
                       cgroup=job.cgroup.main_path() if job.cgroup else None, control=job.control,
                       exit_code=job.exit_code, reason=job.reason, submitted_s=job.submitted_s,
                       started_s=job.started_s, ended_s=job.ended_s, queue_position=position,
                       gpu_mem_held_bytes=job.gpu_mem_bytes if job.state in LIVE_STATES else 0,
                       metrics=dict(job.metrics), tool_calls=calls[-MAX_TOOL_CALLS:], resumed_from=job.resumed_from,
                       migrated_to=job.migrated_to, migration=dict(job.migration), lineage=list(job.lineage),
                       origin=job.lineage[0] if job.lineage else job.id,
                       first_submitted_s=job.first_submitted_s or job.submitted_s)

    def _save(self, job: _Job, required: bool = False) -> None:
        """Write the job's record to its job.json and to jobs.db. A failed write (full disk) is
        logged once, remembered and retried every tick; with ``required`` it raises StoreError."""
        info, runtime = self._info(job), job.runtime()
        self._write_job_file(job, info, runtime)
        if self._store is None:
            self._unsaved.add(job.id)
            if required:
                raise StoreError(self._store_down or f"the job store of node {self.node} is not open")
            return
        try:
            self._store.save(info, job.n, runtime)
        except StoreError as e:
            self._unsaved.add(job.id)
            self._store_failed(e)
            if required:
                raise
            return
        self._unsaved.discard(job.id)

    def _write_job_file(self, job: _Job, info: JobInfo, runtime: dict[str, Any]) -> None:
        """The job's latest record in its own dir: the second copy that outlives a lost jobs.db."""
        path = job.job_dir / JOB_FILE
        tmp = path.with_name(JOB_FILE + ".tmp")
        try:
            tmp.write_bytes(msgspec.json.encode({"info": info, "n": job.n, "runtime": runtime,
                                                 "updated_s": time.time()}))
            os.replace(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            kind = f"errno {e.errno}"
            if kind not in self._file_failures:
                self._file_failures.add(kind)
                log.warning("cannot write %s (%s); the job's record is only in jobs.db until this works", path, e)
            return
        self._file_failures.clear()

    def _store_transition(self, job: _Job, old: str, new: str, actor: str, reason: str) -> None:
        if self._store is None:
            return
        try:
            self._store.transition(job.id, old, new, actor, reason)
        except StoreError as e:
            self._store_failed(e)  # the job's row (retried) still gets its latest state

    def _store_failed(self, e: StoreError) -> None:
        """First failure of a run of failures: log it and tell clients (an event)."""
        if self._store_down is None:
            self._store_down = e.message
            log.error("%s; jobs keep running, their records are retried every tick", e.message)
            self._emit(Event(wall_s=self._clock(), node=self.node, kind="store", ok=False,
                             message=f"{e.message}; jobs keep running, new jobs are refused until it works again"))

    def _retry_store(self) -> None:
        """Each tick: write the records that failed; reopen a store that could not be opened."""
        if self._store is None:
            if not self._started or time.monotonic() < self._store_retry_at:
                return
            self._store_retry_at = time.monotonic() + STORE_RETRY_S
            try:
                self._store = JobStore(self.state_dir / DB_NAME)
            except StoreError:
                return
            self.problems.extend(self._store.problems)
            self._high_water = max(self._high_water, self._store.high_water())
            self._unsaved.update(self._jobs)
        if not self._unsaved:
            if self._store_down is None:
                return
            try:  # nothing waits to be written: probe with a harmless write
                self._store.set_high_water(self._high_water)
            except StoreError:
                return
        for job_id in sorted(self._unsaved):
            job = self._jobs.get(job_id)
            if job is None:
                self._unsaved.discard(job_id)
                continue
            try:
                self._store.save(self._info(job), job.n, job.runtime())
            except StoreError:
                return
            self._unsaved.discard(job_id)
        if self._store_down is not None:
            log.warning("job store %s writable again", self._store.path)
            self._emit(Event(wall_s=self._clock(), node=self.node, kind="store", ok=True,
                             message=f"job store {self._store.path} is writable again; submits are accepted"))
            self._store_down = None

    def _transition(self, job: _Job, old: str, new: str, actor: str, reason: str) -> None:
        job.state = new
        if new in TERMINAL_STATES or (new == "running" and old == "queued" and not job.reason):
            job.reason = reason
        self._store_transition(job, old, new, actor, reason)
        self._save(job)
        self._emit(Event(wall_s=self._clock(), node=self.node, kind="job.state", job_id=job.id, actor=actor,
                         message=f"{job.id} ({job.spec.name or job.spec.argv[0]}) {old or 'new'} -> {new}"
                                 + (f": {reason}" if reason else ""),
                         ok=new not in ("failed",), data={"from": old, "to": new, "reason": reason}))
        self._pending.append(self._info(job))

    def _action(self, job: _Job, action: str, actor: str, ok: bool, message: str,
                data: dict[str, Any] | None = None) -> None:
        self._emit(Event(wall_s=self._clock(), node=self.node, kind="action", job_id=job.id, actor=actor, ok=ok,
                         message=message, data={"action": action, **(data or {})}))

    def _emit(self, event: Event) -> None:
        self._pending.append(event)

    def _flush(self) -> None:
        """Deliver queued events and job updates in order, outside the state lock."""
        with self._cb_lock:
            while True:
                try:
                    item = self._pending.popleft()
                except IndexError:
                    return
                try:
                    if isinstance(item, Event):
                        self._on_event(item)
                    else:
                        self._on_job(item)
                except Exception:  # a broken callback must not break job control
                    log.exception("job manager callback failed")


def _finite_range(value: float, low: float, high: float) -> float:
    """``value`` clamped to low..high; NaN becomes ``low`` (callers inside agentd skip the schema)."""
    if value != value:
        return low
    return max(low, min(high, float(value)))


def _finite_number(v: Any) -> bool:
    """A real int or float that is finite and within float range (not bool, NaN or inf)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:  # a huge JSON integer
        return False


def _shim_ended(pid: int) -> str | None:
    """None while our child ``pid`` runs; else how it ended, in words (it is reaped here)."""
    try:
        got, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return "it is gone" if not procs.is_alive(pid) else None  # not our child (a test's subreaper)
    if got == 0:
        return None
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.WEXITSTATUS(status)}"


def _user_name(uid: int) -> str:
    """The login name of ``uid`` (its number when it has none)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _opt_int(v: Any) -> int | None:
    return int(v) if _finite_number(v) and abs(v) < 1 << 63 else None


def _opt_float(v: Any) -> float | None:
    return float(v) if _finite_number(v) else None
