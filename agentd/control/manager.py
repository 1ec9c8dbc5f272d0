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

Threads: the daemon calls this from worker threads; one lock guards all job state. Nothing waits
for a process while holding it: ``cancel``/``stop``/``wait_exit`` poll, and a launch waits for its
shim outside it (see agentd.control.core), so ``jobs``/``submit`` never stall behind a slow start.
Events and job updates are queued while the lock is held and delivered in order after it is
released, so callbacks may call back in.

Modules: job (record + TRANSITIONS), admission (pure queue plan), launch (shim, exits), process
(freeze/signal/kill/priority), records (jobs.db + job.json), intake (reports), core (shared
steps), adoption (restart), migration_hooks; this module holds the public actions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agentd.control import intake, process, statedir
from agentd.control.cancelling import MAX_WAITING_CANCELS
from agentd.control.cgroups import detect_layout, remove_layout
from agentd.control.gangnode import GangNode
from agentd.control.job import LIVE_STATES, Job, Runtime
from agentd.control.launch import SHIM_START_TIMEOUT_S
from agentd.control.process import priority_nice
from agentd.control.reports import ReportInbox, report_socket_path
from agentd.control.spec import validate_spec
from agentd.kernel import cgroupfs
from agentd.metrics.samples import AppMetric
from agentd.protocol.errors import ErrorCode, ProtocolError
from agentd.protocol.jobs import (
    TERMINAL_STATES,
    Event,
    JobInfo,
    JobSpec,
)
from agentd.protocol.limits import (
    DEFAULT_JOB_RETENTION_S,
    MAX_ENDED_JOBS,
    MAX_METRIC_NAME_CHARS,
    MAX_METRICS_PER_JOB,
    MAX_UNFINISHED_JOBS,
)
from agentd.store.jobstore import StoreError
from agentd.telemetry.cgroup_paths import CgroupRef

__all__ = ["DEFAULT_CGROUP_ROOT", "LOG_MAX_BYTES", "SHIM_START_TIMEOUT_S", "JobManager", "priority_nice"]

log = logging.getLogger(__name__)

DEFAULT_CGROUP_ROOT = Path(cgroupfs.DEFAULT_CGROUP_ROOT)
RETENTION_CHECK_S = 30.0  # how often tick looks for ended jobs past their retention
MAX_LOG_READ = 1 << 20
LOG_MAX_BYTES = 10 << 20  # a job's stdout/stderr log rotates at this size (read at each launch)


class JobManager(GangNode):
    """Runs jobs on this node: queue, launch, pause/resume, priority, cancel, re-adoption."""

    def __init__(self, node: str, state_dir: Path, gpu_count: int, *, on_event: Callable[[Event], None],
                 on_job: Callable[[JobInfo], None], cgroup_root: Path = DEFAULT_CGROUP_ROOT,
                 cpu_count: int | None = None, mem_total_bytes: int | None = None,
                 clock: Callable[[], float] = time.time, retention_s: float = DEFAULT_JOB_RETENTION_S,
                 max_ended_jobs: int = MAX_ENDED_JOBS) -> None:
        super().__init__(node, state_dir, gpu_count, on_event=on_event, on_job=on_job, clock=clock,
                         cpu_count=cpu_count, mem_total_bytes=mem_total_bytes, own_user=_user_name(os.geteuid()))
        self.cgroup_root = Path(cgroup_root)
        self.report_path = report_socket_path(self.state_dir)
        self.retention_s = retention_s
        self.max_ended_jobs = max_ended_jobs
        self._next_retention = 0.0
        self._cancel_waiters = threading.BoundedSemaphore(MAX_WAITING_CANCELS)
        self._closing = threading.Event()
        self._metric_refusals = 0  # metric names over MAX_METRICS_PER_JOB (or too long), all jobs
        self._metric_refusal_logged: set[str] = set()

    def _log_max_bytes(self) -> int:
        return LOG_MAX_BYTES

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Open the store, find the cgroup subtree, re-adopt surviving jobs, open the report socket."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._records.lock_state_dir()
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
            self._records.open()
            # sqlite creates -wal/-shm with the main file's mode: 0600 here keeps all three private
            statedir.secure_state_dir(self.state_dir)
            self.layout = detect_layout(self.cgroup_root, self.node)
            if self.layout is None:
                log.warning("no writable cgroup under %s: jobs are controlled by process group only", self.cgroup_root)
            try:
                self._inbox = ReportInbox(self.report_path)
            except OSError as e:
                log.warning("cannot open the report socket %s: %s; jobs' own metrics are off", self.report_path, e)
            records = self._records.load()
            self._records.high_water = max([self._records.recorded_high_water(self.layout), *(n for _, n, _ in records)],
                                           default=0)
            for info, n, runtime in records:
                self._adopt(info, n, runtime)
            self._schedule()
        for problem in self.problems:
            self._emit(Event(wall_s=self._clock(), node=self.node, kind="store", ok=False, message=problem))
        self._flush()
        self._settle()

    def stop_waiting(self) -> None:
        """Make waiting cancels reply now (the daemon is stopping); their SIGKILL deadlines stay."""
        self._closing.set()

    def close(self) -> None:
        """Stop listening and close the store. Never touches the jobs: they keep running."""
        self._closing.set()  # waiting cancels reply now (a restarted agentd does not know their deadline)
        self._settle(every=True)  # a launch in flight is recorded before the store closes
        with self._lock:
            self._started = False
            self._reap_children()
            if self._inbox is not None:
                self._inbox.close()
                self._inbox = None
            self._records.close()
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
            return {j.id: (j.cgroup.ref() if j.cgroup else None, sorted(process.job_pids(j)))
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
                    pids = sorted(process.job_pids(j))
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
                full = ProtocolError(ErrorCode.TOO_LARGE, f"node {self.node} already has {unfinished} unfinished jobs, "
                                     f"the limit is {MAX_UNFINISHED_JOBS}; wait for some to end or cancel some", "spec")
                self._emit(Event(wall_s=self._clock(), node=self.node, kind="action",
                                 message=f"submit refused: {full.message}", actor=actor, ok=False,
                                 data={"action": "submit", "code": int(full.code), "field": full.field}))
                err: ProtocolError | None = full
            else:
                err = None
        if err is not None:
            self._flush()
            raise err
        with self._lock:
            try:
                n = self._records.allocate_number(self._started)
                job_id = f"{self.node}.{n}"
                job = Job(n=n, id=job_id, node=self.node, spec=spec, state="", priority=spec.priority,
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
                self._transition(job, "queued", actor, "submitted")
                self._action(job, "submit", actor, True, f"job {job_id} ({job.spec.name or job.spec.argv[0]}) submitted")
                self._schedule()
        self._flush()
        if err is not None:
            raise err
        self._settle()  # its own launch, waited for without the lock
        with self._lock:
            return self._info(job)

    def pause(self, job_id: str, actor: str = "") -> JobInfo:
        """Freeze a running job; returns once the kernel reports it frozen. Paused: no-op."""
        return self._do("pause", job_id, actor, self._pause)

    def resume(self, job_id: str, actor: str = "") -> JobInfo:
        """Thaw a paused job; returns once the kernel reports it thawed. Running: no-op."""
        return self._do("resume", job_id, actor, self._resume)

    def set_priority(self, job_id: str, priority: int, actor: str = "") -> JobInfo:
        """Change priority: queued jobs reorder; live jobs get nice and cgroup CPU/IO weights."""
        return self._do("priority", job_id, actor, lambda j, a: self._set_priority(j, priority, a))

    def find_by_label(self, key: str, value: str) -> JobInfo | None:
        """The newest job whose spec has label ``key=value``."""
        with self._lock:
            for job in sorted(self._jobs.values(), key=lambda j: -j.n):
                if job.spec.labels.get(key) == value:
                    return self._info(job)
        return None

    def _record_of(self, job_id: str) -> tuple[JobInfo, int, Runtime] | None:
        job = self._jobs.get(job_id)
        return None if job is None else (self._info(job), job.n, job.runtime())

    def _take_report(self, job: Job, msg: dict[str, Any]) -> None:
        """Apply one report and publish what it changed (lock held). Raises for a malformed one."""
        effect = intake.apply_report(job, msg, self._clock(), self.node)
        if effect.refused:
            self._metric_refusals += effect.refused
            if job.id not in self._metric_refusal_logged:
                self._metric_refusal_logged.add(job.id)
                log.warning("job %s reports more than %d metric names (or names over %d characters); "
                            "the extra ones are dropped", job.id, MAX_METRICS_PER_JOB, MAX_METRIC_NAME_CHARS)
        self._pending.extend(effect.events)
        if effect.changed:
            self._pending.append(self._info(job))

    def tick(self, gpu_mem_by_job: Mapping[str, int] | None = None) -> None:
        """Reap exits, drain reports, record GPU memory, start queued jobs. Call every interval."""
        with self._lock:
            self._records.retry(self._started, list(self._jobs), self._record_of)
            self._reap_children()
            if self._inbox is not None:  # before exits: a job's last reports still count
                members: dict[str, set[int]] = {}
                for msg in self._inbox.drain():
                    try:
                        job = intake.job_of_report(self._jobs, msg, members, self.node, process.job_pids)
                        if job is not None:
                            self._take_report(job, msg)
                    except (TypeError, ValueError, OverflowError, AttributeError) as e:
                        # a job's bad report never stalls the bookkeeping of every job
                        self._inbox.count_bad(f"{type(e).__name__}: {e}")
            self._cancel_due()
            self._expire_gang_locked()
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
        self._settle(any_unclaimed=True)

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
        self._records.forget([j.id for j in old])
        log.info("forgot %d ended jobs past their retention (%g s, at most %d kept)",
                 len(old), self.retention_s, self.max_ended_jobs)

    # ---- action plumbing -------------------------------------------------------------
    def _do(self, action: str, job_id: str, actor: str, fn: Callable[[Job, str], JobInfo]) -> JobInfo:
        err: ProtocolError | None = None
        with self._locked_settled(job_id):
            try:
                info = fn(self._find(job_id), actor)
            except ProtocolError as e:
                self._refused(action, job_id, actor, e)
                err = e
        self._flush()
        self._settle()
        if err is not None:
            raise err
        return info

    def _pause(self, job: Job, actor: str) -> JobInfo:
        if job.state == "paused":
            self._action(job, "pause", actor, True, f"{job.id} is already paused")
            return self._info(job)
        self._require_live(job, "pause", "running")
        try:
            process.freeze(job, True)
        except (OSError, TimeoutError) as e:
            with contextlib.suppress(OSError, TimeoutError):
                process.freeze(job, False)
            raise ProtocolError(ErrorCode.FAILED, f"could not pause job {job.id}: {e}; it is still running", "job") from e
        self._transition(job, "paused", actor, f"paused by {actor or 'a client'}")
        self._save(job)
        self._action(job, "pause", actor, True, f"paused {job.id}")
        return self._info(job)

    def _resume(self, job: Job, actor: str) -> JobInfo:
        if job.state == "running" and not job.cancelling:
            self._action(job, "resume", actor, True, f"{job.id} is already running")
            return self._info(job)
        self._require_live(job, "resume", "paused")
        try:
            process.freeze(job, False)
        except (OSError, TimeoutError) as e:
            raise ProtocolError(ErrorCode.FAILED, f"could not resume job {job.id}: {e}", "job") from e
        self._transition(job, "running", actor, f"resumed by {actor or 'a client'}")
        self._save(job)
        self._action(job, "resume", actor, True, f"resumed {job.id}")
        return self._info(job)

    def _set_priority(self, job: Job, priority: int, actor: str) -> JobInfo:
        if job.state in TERMINAL_STATES:
            raise ProtocolError(ErrorCode.CONFLICT, f"job {job.id} already ended ({job.state}); its priority "
                                "can no longer change", "job")
        old = job.priority
        job.priority = priority
        job.revision += 1
        if job.state in LIVE_STATES:
            process.apply_priority(job)
        self._save(job)
        self._records.transition(job.id, job.state, job.state, actor, f"priority {old:+d} -> {priority:+d}")
        self._action(job, "priority", actor, True, f"priority of {job.id} {old:+d} -> {priority:+d}",
                     {"old": old, "new": priority})
        if job.state == "queued":
            self._schedule()
            for other in self._jobs.values():  # everyone's queue position may have moved
                if other.state == "queued" and other is not job:
                    self._pending.append(self._info(other))
        self._pending.append(self._info(job))
        return self._info(job)

    def _require_live(self, job: Job, action: str, want: str) -> None:
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


def _user_name(uid: int) -> str:
    """The login name of ``uid`` (its number when it has none)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
