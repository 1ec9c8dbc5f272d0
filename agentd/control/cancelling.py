"""Cancel, for the local manager: SIGTERM, a grace period, SIGKILL; a reply that waits for the
end only briefly and only for a few callers at once (``tick`` finishes the rest).
"""

from __future__ import annotations

import signal
import threading
import time

from agentd.control import launch, process
from agentd.control.job import LIVE_STATES, Job
from agentd.control.migration_hooks import MigrationHooks
from agentd.protocol.errors import ErrorCode, ProtocolError
from agentd.protocol.jobs import TERMINAL_STATES, Event, JobInfo
from agentd.protocol.limits import MAX_GRACE_S

CANCEL_REPLY_WAIT_S = 10.0  # a cancel reply waits at most this long for the end of the job
MAX_WAITING_CANCELS = 4  # cancels waiting at once; half the daemon's request threads at most


class Cancelling(MigrationHooks):
    """``cancel`` and its deadline bookkeeping."""

    _cancel_waiters: threading.BoundedSemaphore
    _closing: threading.Event

    def cancel(self, job_id: str, grace_s: float = 10.0, actor: str = "") -> JobInfo:
        """SIGTERM everything in the job, SIGKILL after ``grace_s``; paused jobs are killed then thawed.

        Waits for the end at most ``min(grace_s, CANCEL_REPLY_WAIT_S)`` seconds, and only while
        fewer than ``MAX_WAITING_CANCELS`` other cancels wait: a slow job never holds a request
        thread for long. Otherwise it returns the job still live (``reason`` says it is being
        cancelled); ``tick`` sends SIGKILL at the deadline and ends the job. A finished job is
        a CONFLICT; cancelling a job already being cancelled keeps the earlier deadline.
        """
        try:
            return self._cancel(job_id, grace_s, actor)
        finally:
            self._settle()  # launches its end made room for

    def _cancel(self, job_id: str, grace_s: float, actor: str) -> JobInfo:
        err: ProtocolError | None = None
        grace_s = _finite_range(grace_s, 0.0, MAX_GRACE_S)
        with self._locked_settled(job_id):
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
                self._transition(job, "cancelled", actor, f"cancelled by {actor or 'a client'} while queued")
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
                        process.kill_now(job)
                    else:
                        job.kill_at = time.monotonic() + grace_s
                        process.signal_job(job, signal.SIGTERM)
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
                        if job.state in TERMINAL_STATES or not process.job_pids(job):
                            break
                    time.sleep(0.02)
            finally:
                self._cancel_waiters.release()
        with self._lock:
            due = job.kill_at is None or time.monotonic() >= job.kill_at
            if job.state not in TERMINAL_STATES and due and process.job_pids(job):
                process.kill_now(job)
            gone = job.state in TERMINAL_STATES or not process.job_pids(job)
        if not gone:
            with self._lock:
                self._action(job, "cancel", actor, True, f"cancel {job_id}: SIGTERM sent; SIGKILL in "
                             f"{max(0.0, (job.kill_at or 0) - time.monotonic()):.0f} s unless it exits first",
                             {"pending": True})
                info = self._info(job)
            self._flush()
            return info
        launch.wait_exit_file(job.job_dir, job.shim_pid)
        with self._lock:
            self._end_cancelled(job, actor)
            info = self._info(job)
        self._flush()
        return info

    def _end_cancelled(self, job: Job, actor: str) -> None:
        """Record the end of a cancelled job whose processes are gone (call with the lock held)."""
        if job.state not in TERMINAL_STATES:
            exit_info = launch.read_exit(job.job_dir)
            self._finish(job, "cancelled", exit_info.exit_code if exit_info else None, job.reason, actor)
        self._action(job, "cancel", actor, job.state == "cancelled", f"cancel {job.id}: {job.state}")
        job.kill_at = None
        self._schedule()

    def _cancel_due(self) -> None:
        """SIGKILL cancelled jobs whose grace period is over (from ``tick``, lock held)."""
        now = time.monotonic()
        for job in self._jobs.values():
            if job.cancelling and job.kill_at is not None and job.state in LIVE_STATES:
                if now >= job.kill_at and process.job_pids(job):
                    process.kill_now(job)
                if not process.job_pids(job):
                    job.kill_at = None
                    launch.wait_exit_file(job.job_dir, job.shim_pid)
                    self._end_cancelled(job, job.cancel_actor)

    def _refused(self, action: str, job_id: str, actor: str, e: ProtocolError) -> None:
        self._emit(Event(wall_s=self._clock(), node=self.node, kind="action", job_id=job_id, actor=actor, ok=False,
                         message=f"{action} {job_id} refused: {e.message}",
                         data={"action": action, "code": int(e.code), "field": e.field}))



def _finite_range(value: float, low: float, high: float) -> float:
    """``value`` clamped to low..high; NaN becomes ``low`` (callers inside agentd skip the schema)."""
    if value != value:  # NaN
        return low
    return max(low, min(high, float(value)))

