"""JobCore: the local manager's job table and the steps every action shares: records and
events, scheduling (through :func:`agentd.control.admission.plan_admission`), launching
(through :mod:`agentd.control.launch`), exits and ends. :class:`~agentd.control.manager.JobManager`
builds the public actions on top of it.

Locking: one re-entrant lock guards the table. Nothing here waits for a process while holding
it, except the bounded kill/freeze waits of :mod:`agentd.control.process`. A launch is started
under the lock (the shim is spawned and the job is *starting*), then :meth:`JobCore._settle`
waits for the shim without the lock and records the result under it: a slow start never stalls
``jobs``, ``submit`` or any other job's action. Events and job updates are queued while the
lock is held and delivered in order after it is released (:meth:`JobCore._flush`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from agentd.control import admission, launch, process, procs, statedir
from agentd.control.cgroups import CgroupLayout
from agentd.control.job import LIVE_STATES, Job
from agentd.control.records import JobRecords
from agentd.control.reports import ReportInbox
from agentd.protocol.errors import ErrorCode, ProtocolError
from agentd.protocol.jobs import TERMINAL_STATES, Event, JobInfo
from agentd.store.jobstore import StoreError, store_error

log = logging.getLogger(__name__)

MAX_TOOL_CALLS = 100
LOG_MAX_BYTES_DEFAULT = 10 << 20


@dataclass
class Launching:
    """A launch in flight: the shim runs, the job has not exec'd yet."""

    job: Job
    shim_pid: int
    gpus: list[int]
    started_by: int  # thread ident of whoever started it: it waits for the result
    claimed: bool = False  # a thread is waiting for the shim
    done: threading.Event = field(default_factory=threading.Event)


class JobCore:
    """State and shared steps of the local manager (see the module docstring)."""

    def __init__(self, node: str, state_dir: Path, gpu_count: int, *, on_event: Callable[[Event], None],
                 on_job: Callable[[JobInfo], None], clock: Callable[[], float],
                 cpu_count: int | None, mem_total_bytes: int | None, own_user: str) -> None:
        self.node = node
        self.state_dir = Path(state_dir)
        self.gpu_count = gpu_count
        self.cpu_count = cpu_count
        self.mem_total_bytes = mem_total_bytes
        self.own_user = own_user  # the owner of jobs whose spec names no user
        self._on_event = on_event
        self._on_job = on_job
        self._clock = clock
        self._lock = threading.RLock()
        self._cb_lock = threading.Lock()
        self._pending: deque[Event | JobInfo] = deque()
        self._jobs: dict[str, Job] = {}
        self._children: set[int] = set()
        self._starting: dict[str, Launching] = {}
        self._inbox: ReportInbox | None = None
        self.layout: CgroupLayout | None = None
        self._started = False
        # Gang admission: queued ranks whose resources are reserved (job id -> monotonic
        # deadline); their ``gpus`` are the reserved ones (agentd.control.gangnode).
        self._gang_reserved: dict[str, float] = {}
        self._records = JobRecords(self.state_dir, node, self._store_event)
        self.problems = self._records.problems  # what went wrong reading the state at start
        self.report_path = Path()

    def _log_max_bytes(self) -> int:
        return LOG_MAX_BYTES_DEFAULT

    # ---- records and notifications ---------------------------------------------------
    def _find(self, job_id: str) -> Job:
        job = self._jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no job {job_id!r} on node {self.node}; "
                                "list jobs with 'agentctl jobs'", "job")
        return job

    def _info(self, job: Job) -> JobInfo:
        position = None
        if job.state == "queued":
            position = next((i for i, j in enumerate(self._queue()) if j is job), None)
        calls = list(job.tool_calls) + list(job.open_tools.values())
        return JobInfo(id=job.id, node=job.node, name=job.spec.name or Path(job.spec.argv[0]).name if job.spec.argv else "",
                       state=job.state, spec=job.spec, priority=job.priority, pid=job.pid,  # type: ignore[arg-type]
                       owner=job.spec.user or self.own_user,
                       pids=sorted(process.job_pids(job)), gpus=list(job.gpus),
                       cgroup=job.cgroup.main_path() if job.cgroup else None, control=job.control,
                       exit_code=job.exit_code, reason=job.reason, submitted_s=job.submitted_s,
                       started_s=job.started_s, ended_s=job.ended_s, queue_position=position,
                       gpu_mem_held_bytes=job.gpu_mem_bytes if job.live else 0,
                       metrics=dict(job.metrics), tool_calls=calls[-MAX_TOOL_CALLS:], resumed_from=job.resumed_from,
                       migrated_to=job.migrated_to, migration=dict(job.migration), lineage=list(job.lineage),
                       origin=job.lineage[0] if job.lineage else job.id,
                       first_submitted_s=job.first_submitted_s or job.submitted_s, revision=job.revision)

    def _save(self, job: Job, required: bool = False) -> None:
        self._records.save(job.job_dir, self._info(job), job.n, job.runtime(), required)

    def _store_event(self, message: str, ok: bool) -> None:
        self._emit(Event(wall_s=self._clock(), node=self.node, kind="store", ok=ok, message=message))

    def _transition(self, job: Job, new: str, actor: str, reason: str) -> None:
        """Move ``job`` to ``new`` (checked against job.TRANSITIONS), record it and tell clients."""
        old = job.set_state(new)
        if new in TERMINAL_STATES or (new == "running" and old == "queued" and not job.reason):
            job.reason = reason
        self._records.transition(job.id, old, new, actor, reason)
        self._save(job)
        self._emit(Event(wall_s=self._clock(), node=self.node, kind="job.state", job_id=job.id, actor=actor,
                         message=f"{job.id} ({job.spec.name or job.spec.argv[0]}) {old or 'new'} -> {new}"
                                 + (f": {reason}" if reason else ""),
                         ok=new not in ("failed",), data={"from": old, "to": new, "reason": reason}))
        self._pending.append(self._info(job))

    def _action(self, job: Job, action: str, actor: str, ok: bool, message: str,
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

    # ---- scheduling ------------------------------------------------------------------
    def _queue(self) -> list[Job]:
        """Queued jobs in admission order (jobs already starting are out of the queue)."""
        waiting = {j.id: j for j in self._jobs.values() if j.state == "queued" and not j.starting}
        return [waiting[q.id] for q in admission.queue_order([self._queued(j) for j in waiting.values()])]

    @staticmethod
    def _queued(job: Job) -> admission.QueuedJob:
        return admission.QueuedJob(id=job.id, n=job.n, priority=job.priority, gpus=job.spec.gpus,
                                   cpus=job.spec.cpus, memory_bytes=job.spec.memory_bytes)

    def _holding(self) -> list[Job]:
        """Jobs that hold resources: live and starting ones, and parked migrations (their GPUs
        wait for a restart)."""
        return [j for j in self._jobs.values() if j.live or j.starting or (j.state == "migrating" and j.gpus)
                or (j.state == "queued" and j.id in self._gang_reserved)]

    def _used_gpus(self, but: Job | None = None) -> list[int]:
        return [g for j in self._holding() if j is not but for g in j.gpus]

    def _resources(self) -> admission.NodeResources:
        used = set(self._used_gpus())
        holding = self._holding()
        return admission.NodeResources(
            node=self.node, gpu_count=self.gpu_count, free_gpus=tuple(g for g in range(self.gpu_count) if g not in used),
            cpu_count=self.cpu_count, cpus_used=sum(j.spec.cpus or 0 for j in holding),
            mem_total_bytes=self.mem_total_bytes, mem_used_bytes=sum(j.spec.memory_bytes or 0 for j in holding))

    def _schedule(self) -> None:
        """Start queued jobs as :func:`admission.plan_admission` says (lock held). A launch that
        fails at once frees its resources: plan again. A deferred one (full disk) keeps the order."""
        while True:
            # Ranks of a group are held for the gang: only the group's leader starts them, all
            # at once (agentd.control.gangnode); they do not block the local queue meanwhile.
            # A group member that names no leader (made by hand through the protocol) has
            # nobody to start it: it is scheduled as a plain job.
            queue = []
            for j in self._queue():
                if j.spec.group is None or not j.spec.group.leader:
                    queue.append(self._queued(j))
                elif not j.reason:
                    j.reason = f"held for gang {j.spec.group.id}: waiting for its leader's admission round"
            plan = admission.plan_admission(queue, self._resources())
            for never in plan.never:
                self._finish(self._jobs[never.job_id], "failed", None, never.reason, "")
            replan = False
            for start in plan.start:
                job = self._jobs[start.job_id]
                self._start(job, list(start.gpus))
                if job.state == "queued" and not job.starting:
                    return  # its launch was deferred (full disk): keep the order
                if job.state != "queued" and job.state not in LIVE_STATES:
                    replan = True  # failed at once: its resources are free again
                    break
            if not replan:
                return

    def _start(self, job: Job, gpus: list[int]) -> None:
        """Begin launching ``job`` on ``gpus`` (lock held); :meth:`_settle` completes it."""
        job.exited, job.exit_code, job.held = False, None, False
        for stale in ("pid.json", "exit.json"):
            with contextlib.suppress(OSError):
                (job.job_dir / stale).unlink()
        job.gpus = gpus
        job.cgroup, job.control = None, "pgroup"
        try:
            plan = launch.prepare_launch(job, gpus, layout=self.layout, node=self.node, report_path=self.report_path,
                                         report_open=self._inbox is not None, log_max_bytes=self._log_max_bytes())
        except launch.LaunchError as e:
            self._launch_failed(job, e.reason)
            return
        job.cgroup, job.control = plan.cgroup, plan.control
        # Journal the launch before anything can start the job (see the manager's docstring).
        plan.launch["launch_token"] = job.launch_token = os.urandom(16).hex()
        job.shim_pid = None
        try:
            self._save(job, required=True)
            statedir.write_private(job.job_dir / "launch.json", msgspec.json.encode(plan.launch))
        except (StoreError, OSError) as e:
            self._defer_launch(job, e)
            return
        try:
            shim_pid = launch.spawn_shim(job.job_dir)
        except OSError as e:
            self._launch_failed(job, f"could not start the job's shim: {e}")
            return
        self._children.add(shim_pid)
        job.shim_pid = shim_pid
        self._starting[job.id] = Launching(job, shim_pid, gpus, threading.get_ident())

    def _complete_launch(self, item: Launching, result: launch.Started | launch.StartFailed) -> None:
        """Record how a launch went (lock held)."""
        job = item.job
        self._starting.pop(job.id, None)
        if isinstance(result, launch.StartFailed):
            if result.shim_reaped:
                self._children.discard(item.shim_pid)
            job.launch_token = None
            self._launch_failed(job, result.reason)
            return
        job.pid, job.start_ticks = result.pid, result.start_ticks
        job.started_s = self._clock()
        restored = bool(job.restore_images)
        how = "restored from its CRIU image" if restored else "started"
        self._drop_image(job)  # criu restore -d has returned: the image is spent
        job.launch_token = None
        self._transition(job, "running", "", f"{how} on GPUs {item.gpus}" if item.gpus else how)
        if restored:
            process.apply_priority(job)  # the restored tasks keep the nice they had on the source
        self._save(job)
        if job.pause_on_start:
            job.pause_on_start = False
            try:
                process.freeze(job, True)
                self._transition(job, "paused", "", "paused on start")
            except (OSError, TimeoutError) as e:
                log.warning("could not pause %s on start: %s", job.id, e)

    def _settle(self, job_id: str | None = None, *, any_unclaimed: bool = False, every: bool = False) -> None:
        """Wait, holding no lock, for launches in flight and record their results: those this
        thread started, ``job_id``'s, with ``any_unclaimed`` every one nobody waits for, and with
        ``every`` all of them (closing)."""
        me = threading.get_ident()
        while True:
            with self._lock:
                mine = [p for p in self._starting.values() if every or p.started_by == me or p.job.id == job_id]
                todo = [p for p in self._starting.values() if not p.claimed
                        and (p in mine or any_unclaimed)]
                if not todo and not mine:
                    return
                item = todo[0] if todo else mine[0]
                claim = not item.claimed
                item.claimed = True
            if not claim:  # another thread waits for this shim: wait for its verdict
                item.done.wait(launch.SHIM_START_TIMEOUT_S + 5.0)
                continue
            try:
                result = launch.await_start(item.job.job_dir, item.shim_pid)
            except (OSError, ValueError, KeyError) as e:
                result = launch.StartFailed(f"the job's shim wrote no readable pid.json ({e})", False)
            try:
                with self._lock:
                    if self._starting.get(item.job.id) is item:
                        self._complete_launch(item, result)
                        self._schedule()
            finally:
                item.done.set()
            self._flush()

    @contextlib.contextmanager
    def _locked_settled(self, job_id: str) -> Iterator[None]:
        """Hold the lock with no launch of ``job_id`` in flight (an action waits for the start)."""
        while True:
            self._settle(job_id)
            self._lock.acquire()
            if not isinstance(job_id, str) or job_id not in self._starting:
                break
            self._lock.release()
        try:
            yield
        finally:
            self._lock.release()

    def _defer_launch(self, job: Job, e: Exception) -> None:
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

    def _launch_failed(self, job: Job, reason: str) -> None:
        log.warning("job %s: %s", job.id, reason)
        self._finish(job, "failed", None, reason, "")

    # ---- exits and ends --------------------------------------------------------------
    def _reap_children(self) -> None:
        for pid in list(self._children):
            try:
                got, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                got = pid
            if got == pid:
                self._children.discard(pid)

    def _check_exit(self, job: Job) -> None:
        result = launch.read_exit(job.job_dir)
        if result is not None:
            self._finish_from_exit(job, result, "")
        elif not procs.is_alive(job.shim_pid) and not procs.is_alive(job.pid, job.start_ticks):
            if (job.state == "checkpointing" or job.held) and not job.cancelling:
                self._record_exit(job, None)
                return
            self._finish(job, "cancelled" if job.cancelling else "failed", None,
                         job.reason or "the job and its shim are gone; exit code unknown", "")

    def _finish_from_exit(self, job: Job, result: launch.ExitRecord, suffix: str) -> None:
        if (job.state == "checkpointing" or job.held) and not job.cancelling:
            self._record_exit(job, result.exit_code)  # a migration hook decides what happens next
            return
        state, reason = launch.exit_outcome(result, cancelling=job.cancelling, cancel_reason=job.reason,
                                            oom=bool(result.signal) and process.oom_killed(job))
        self._finish(job, state, result.exit_code, reason + suffix, "", ended_s=result.ended_s)

    def _record_exit(self, job: Job, code: int | None) -> None:
        """The job's processes are gone but it is not over (checkpoint or stop during migration)."""
        if job.cgroup is not None:
            job.cgroup.kill_all(process.KILL_TIMEOUT_S)
            job.cgroup.remove()
        job.exited = True
        job.exit_code = code
        self._save(job)
        self._pending.append(self._info(job))

    def _finish(self, job: Job, state: str, exit_code: int | None, reason: str, actor: str,
                ended_s: float | None = None) -> None:
        """End a job: kill leftovers, remove its cgroup, free its resources, record it."""
        if job.terminal:
            return
        had_cgroup = job.cgroup is not None
        left = process.kill_leftovers(job)
        if left and had_cgroup:
            log.info("job %s ended with %d processes left; killing them", job.id, left)
        self._drop_image(job)
        job.exit_code = exit_code
        job.ended_s = ended_s or self._clock()
        job.gpu_mem_bytes = 0
        now = self._clock()
        for call in job.open_tools.values():
            job.tool_calls.append(msgspec.structs.replace(call, ended_s=now))
        job.open_tools.clear()
        self._transition(job, state, actor, reason)
        self._save(job)

    def _drop_image(self, job: Job) -> None:
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

    def _wait_gone(self, job: Job, deadline: float) -> None:
        """Poll (lock released between polls) until the job has no processes or ``deadline``."""
        while time.monotonic() < deadline:
            with self._lock:
                if job.terminal or not process.job_pids(job):
                    return
            time.sleep(0.02)

    def _kill(self, job: Job) -> None:
        process.kill_now(job)

    def _term(self, job: Job) -> None:
        process.signal_job(job, signal.SIGTERM)

    def _create_job_dir(self, job: Job) -> None:
        """Make the job's dir and its first record (job.json, jobs.db row): a job exists only once
        it is on disk. Raises StoreError."""
        try:
            statedir.make_traversable_dir(job.job_dir)
        except OSError as e:
            raise store_error(job.job_dir, "create the job dir", e) from None
        self._save(job, required=True)

    @staticmethod
    def _store_refusal(e: StoreError | ProtocolError) -> ProtocolError:
        if isinstance(e, ProtocolError):
            return e
        return ProtocolError(ErrorCode.UNAVAILABLE, f"{e.message}; the job was not submitted", "spec")
