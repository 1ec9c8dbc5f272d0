"""Re-adoption: a restarted agentd takes over the jobs its records name, and finds out what
became of each while it was down (still running, paused, ended, or caught mid-launch).
"""

from __future__ import annotations

import logging
from pathlib import Path

from agentd.control import launch, process, procs
from agentd.control.cgroups import JobCgroup
from agentd.control.core import JobCore
from agentd.control.job import LIVE_STATES, Job, Runtime
from agentd.protocol.jobs import Event, JobInfo

log = logging.getLogger(__name__)


class Adoption(JobCore):
    """Re-adoption steps of the local manager (run from ``start`` under the lock)."""

    def _adopt(self, info: JobInfo, n: int, runtime: Runtime) -> None:
        """Take over a job from its record (agentd restarted): find what became of it meanwhile."""
        cg = None
        if runtime.cgroup is not None:
            cg = JobCgroup(version=runtime.cgroup.version, paths={k: Path(v) for k, v in runtime.cgroup.paths.items()})
        job = Job(n=n, id=info.id, node=info.node, spec=info.spec, state=info.state, priority=info.priority,
                  submitted_s=info.submitted_s, job_dir=Path(runtime.job_dir or self.state_dir / "jobs" / str(n)),
                  checkpoint_dir=Path(runtime.checkpoint_dir or self.state_dir / "checkpoints" / info.id),
                  started_s=info.started_s, ended_s=info.ended_s, pid=info.pid, shim_pid=runtime.shim_pid,
                  start_ticks=runtime.start_ticks, gpus=list(info.gpus), cgroup=cg, control=info.control,
                  exit_code=info.exit_code, reason=info.reason, metrics=dict(info.metrics),
                  counters=set(info.spec.counters), tool_calls=list(info.tool_calls), resumed_from=info.resumed_from,
                  resume=runtime.resume, migrated_to=info.migrated_to,
                  migration=dict(runtime.migration or info.migration),
                  exited=runtime.exited, held=runtime.held,
                  pause_on_start=runtime.pause_on_start,
                  restore_images=runtime.restore_images,
                  launch_token=runtime.launch_token,
                  lineage=list(info.lineage), first_submitted_s=info.first_submitted_s)
        self._jobs[job.id] = job
        if job.id in self._records.unsaved:
            self._save(job)  # recovered from its job dir: back into jobs.db
        if job.state == "queued" and job.launch_token:
            self._recover_launch(job)
        if job.state != "queued":
            self._drop_image(job)  # restored (or ended) while agentd was down: the image is spent
        if job.state not in LIVE_STATES or job.exited:
            return
        if job.shim_pid:
            self._children.add(job.shim_pid)  # ours only if we are its subreaper; else dropped on ECHILD
        result = launch.read_exit(job.job_dir)
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
            frozen = process.is_frozen(job)
            seen = "paused" if frozen else "running"
            if seen != job.state:
                self._transition(job, seen, "", f"found {seen} after agentd restart")
        self._save(job)
        self._emit(Event(wall_s=self._clock(), node=self.node, kind="job.state", job_id=job.id,
                        message=f"re-adopted {job.id} ({job.state}, pid {job.pid})",
                        data={"from": job.state, "to": job.state, "reason": "re-adopted after agentd restart"}))
        self._pending.append(self._info(job))

    def _recover_launch(self, job: Job) -> None:
        """agentd died during this job's launch: find out whether the shim started it."""
        assert job.launch_token is not None
        got = launch.recover_launch(job.job_dir, job.launch_token)
        if got.outcome == "revoked":
            log.info("job %s: its launch before the agentd restart never started; starting it now", job.id)
            job.launch_token = None
            if job.cgroup is not None:
                job.cgroup.remove()
            job.cgroup, job.gpus = None, []
            self._save(job)
            return
        if got.shim_pid is not None:
            job.shim_pid = got.shim_pid
        job.launch_token = None
        if got.outcome != "started":
            self._finish(job, "failed", None, got.reason, "")
            return
        job.pid, job.start_ticks = got.pid, got.start_ticks
        if got.started_s is not None:
            job.started_s = got.started_s
        gpus = f" on GPUs {job.gpus}" if job.gpus else ""
        self._transition(job, "running", "", f"started{gpus} (confirmed after an agentd restart)")
