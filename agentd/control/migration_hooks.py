"""Migration hooks of the local manager: what :mod:`agentd.control.migration` calls on the
source (checkpoint, CRIU dump, stop, abandon, restart here, finish as migrated) and on the
target (admission, start a resumed job). Every hook takes the manager's lock itself; the ones
that act on a job first wait for a launch of that job in flight (``_locked_settled``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from agentd.control import admission as adm
from agentd.control import criu, launch, process, procs, statedir
from agentd.control.adoption import Adoption
from agentd.control.job import LIVE_STATES, Job
from agentd.control.spec import signal_number, validate_spec
from agentd.protocol.errors import ErrorCode, ProtocolError
from agentd.protocol.jobs import TERMINAL_STATES, JobInfo, JobSpec, trim_lineage
from agentd.store.jobstore import StoreError


class MigrationHooks(Adoption):
    """The hooks :class:`agentd.control.migration.SourceJobs`/``TargetJobs`` expect."""

    @staticmethod
    def _queued_spec(spec: JobSpec) -> adm.QueuedJob:
        return adm.QueuedJob(id="", n=0, gpus=spec.gpus, cpus=spec.cpus, memory_bytes=spec.memory_bytes)

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
            group = {p for p in process.job_pids(job) if procs.process_group(p) == job.pid}
        why = procs.why_signal_unhandled(group, signal_number(name), name)
        return f"job {job_id} {why}" if why else None

    def begin_checkpoint(self, job_id: str, actor: str = "") -> None:
        """Set ``checkpointing``, signal the job's process group, then thaw it if paused.

        From now on the job's exit only records its exit code; another hook decides its state.
        """
        with self._locked_settled(job_id):
            job = self._find(job_id)
            if job.spec.checkpoint is None:
                raise ProtocolError(ErrorCode.INVALID, f"job {job_id} has no checkpoint contract; it can only "
                                    "be migrated with CRIU or restarted from scratch", "job")
            if job.cancelling or job.exited or job.state not in ("running", "paused", "checkpointing"):
                raise ProtocolError(ErrorCode.CONFLICT, f"job {job_id} is {job.state}"
                                    f"{' and being cancelled' if job.cancelling else ''}; only a running or "
                                    "paused job can checkpoint", "job")
            job.held = True
            sig = signal_number(job.spec.checkpoint.signal)
            if job.state != "checkpointing":
                self._transition(job, "checkpointing", actor, "checkpoint requested")
            else:
                self._save(job)
            # Once, to the process group only: a second signal landing while the job exits after
            # writing its checkpoint can kill it (Python restores default handlers at shutdown).
            # Signalled *before* the thaw (a frozen or stopped task keeps it pending and handles it
            # first thing when thawed): thawed first, a rank of a group could finish a step that
            # a peer's stop rode in, checkpoint and be exiting when the signal came, and die of it.
            process.signal_group(job, sig)
            process.freeze(job, False)  # a frozen job cannot handle the signal (thaw whatever the state says)
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
            members = process.job_pids(job)
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
        with self._locked_settled(job_id):
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
            was_paused = job.state == "paused" or (job.state == "checkpointing" and process.is_frozen(job))
            process.freeze(job, False)  # ptrace cannot seize a frozen task
            job.held = True
            if job.state != "checkpointing":
                self._transition(job, "checkpointing", actor, "CRIU dump")
            pid = job.pid
        self._flush()
        try:
            criu.dump(pid, images_dir)  # type: ignore[arg-type]  # checked above: not None
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
        with self._locked_settled(job_id):
            job = self._find(job_id)
            if job.state not in LIVE_STATES or job.exited:
                return
            job.held = True
            if job.state == "paused":
                process.kill_now(job)
            else:
                process.signal_job(job, signal.SIGTERM)
        deadline = time.monotonic() + max(0.0, grace_s)
        while time.monotonic() < deadline:
            with self._lock:
                if not process.job_pids(job):
                    break
            time.sleep(0.02)
        with self._lock:
            process.kill_now(job)
        launch.wait_exit_file(job.job_dir, job.shim_pid)
        with self._lock:
            result = launch.read_exit(job.job_dir)
            self._record_exit(job, result.exit_code if result else None)
        self._flush()

    def abandon_checkpoint(self, job_id: str, reason: str, paused: bool) -> JobInfo:
        """The job did not checkpoint in time and still runs: back to running (or paused)."""
        with self._locked_settled(job_id):
            job = self._find(job_id)
            if job.state != "checkpointing" or job.exited:
                raise ProtocolError(ErrorCode.CONFLICT, f"job {job_id} is {job.state}"
                                    f"{' and has exited' if job.exited else ''}; there is no running "
                                    "checkpoint to abandon", "job")
            job.reason = reason
            job.held = False
            self._transition(job, "running", "", reason)
            if paused:
                process.freeze(job, True)
                self._transition(job, "paused", "", reason)
            info = self._info(job)
        self._flush()
        return info

    def restart_local(self, job_id: str, reason: str, paused: bool, from_checkpoint: bool,
                      restore_images: Path | None = None) -> JobInfo:
        """Start the same job id here again (AGENTD_RESUME=1 from its checkpoint when asked, or
        restored from the CRIU image ``restore_images``)."""
        with self._locked_settled(job_id):
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
            self._transition(job, "queued", "", reason)
            if len(gpus) == job.spec.gpus and not set(gpus) & set(self._used_gpus(but=job)):
                self._start(job, gpus)  # its GPUs were kept for it
            self._schedule()
        self._flush()
        self._settle()  # its launch (or one it made room for), waited for without the lock
        with self._lock:
            return self._info(job)

    def hold_queued(self, job_id: str) -> None:
        """Take a queued job out of scheduling (state ``migrating``); CONFLICT if it started."""
        with self._locked_settled(job_id):
            job = self._find(job_id)
            if job.state != "queued":
                raise ProtocolError(ErrorCode.CONFLICT, f"job {job_id} is {job.state}, not queued", "job")
            job.held = True
            self._transition(job, "migrating", "", "held for migration")
        self._flush()

    def requeue(self, job_id: str, reason: str) -> JobInfo:
        """Put a held queued job back in the queue (the migration failed)."""
        with self._locked_settled(job_id):
            job = self._find(job_id)
            if job.state != "migrating" or job.pid is not None:
                raise ProtocolError(ErrorCode.CONFLICT, f"job {job_id} is {job.state}, not a held queued job", "job")
            job.reason = reason
            job.held = False
            self._transition(job, "queued", "", reason)
            self._schedule()
        self._flush()
        self._settle()  # its launch (or one it made room for), waited for without the lock
        with self._lock:
            return self._info(job)

    def update_migration(self, job_id: str, migration: dict[str, Any], state: str | None = None) -> None:
        """Set JobInfo.migration (and the state when given) and publish the change."""
        with self._locked_settled(job_id):
            job = self._find(job_id)
            job.migration = dict(migration)
            if state is not None and state != job.state and job.state not in TERMINAL_STATES:
                self._transition(job, state, "", str(migration.get("phase", "")))
            else:
                self._save(job)
                self._pending.append(self._info(job))
        self._flush()

    def finish_migrated(self, job_id: str, migrated_to: str, reason: str) -> JobInfo:
        """Terminal state ``migrated`` with JobInfo.migrated_to set."""
        with self._locked_settled(job_id):
            job = self._find(job_id)
            if job.state in TERMINAL_STATES:
                raise ProtocolError(ErrorCode.CONFLICT, f"job {job_id} already ended ({job.state})", "job")
            job.migrated_to = migrated_to
            job.held = False
            self._finish(job, "migrated", job.exit_code, reason, "")
            self._schedule()
        self._flush()
        self._settle()  # its launch (or one it made room for), waited for without the lock
        with self._lock:
            return self._info(job)

    def admission(self, spec: JobSpec) -> tuple[bool, str]:
        """Can this node take ``spec``: (will_queue, message). Raises ProtocolError(INVALID) if never."""
        validate_spec(spec, gpu_count=self.gpu_count, cpu_count=self.cpu_count, mem_total_bytes=self.mem_total_bytes)
        with self._lock:
            res = self._resources()
            waiting = len(self._queue())
            if waiting or adm.shortfall([self._queued_spec(spec)], len(res.free_gpus), res.cpus_used,
                                              res.mem_used_bytes, res):
                return True, (f"node {self.node} has {len(res.free_gpus)} free GPUs and {waiting} queued jobs; "
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
                n = self._records.allocate_number(self._started)
            except StoreError as e:
                raise self._store_refusal(e) from None
            job_id = f"{self.node}.{n}"
            ckpt = self.state_dir / "checkpoints" / job_id
            if checkpoint_dir is not None:
                ckpt.parent.mkdir(parents=True, exist_ok=True)
                os.replace(checkpoint_dir, ckpt)
                try:
                    run_as = launch.run_as_user(spec)
                except KeyError:
                    run_as = None  # the launch fails and says why
                if run_as is not None and not criu_image:
                    # received as root; no process of the job exists yet, so nothing can move under the walk
                    statedir.hand_over_tree(ckpt, run_as.pw_uid, run_as.pw_gid)
            job = Job(n=n, id=job_id, node=self.node, spec=spec, state="", priority=spec.priority,
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
            self._transition(job, "queued", "", f"continues {resumed_from}")
            self._schedule()
        self._flush()
        self._settle()  # its launch (or one it made room for), waited for without the lock
        with self._lock:
            return self._info(job)

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
