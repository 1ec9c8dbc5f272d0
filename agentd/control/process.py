"""Process mechanics of a local job: find its processes, freeze/thaw, signal, kill, priority.

Each function acts on one :class:`~agentd.control.job.Job` through its cgroup where it has one,
else through its process group/session (``pgroup`` control). None of them changes the job's
record: the manager decides states; these only touch processes and cgroup files.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from agentd.control import procs
from agentd.control.job import Job
from agentd.kernel.files import read_keyed

STOP_TIMEOUT_S = 5.0
KILL_TIMEOUT_S = 5.0


def priority_nice(priority: int) -> int:
    """nice value for a job priority: +10 -> nice -10, -10 -> nice 10."""
    return max(-20, min(19, -priority))


def job_pids(job: Job) -> set[int]:
    """Live processes of the job (zombies excluded); empty unless the job is live."""
    if not job.live:
        return set()
    if job.cgroup is not None:
        found = procs.live(job.cgroup.pids())
    elif job.pid and procs.is_alive(job.pid, job.start_ticks):
        found = procs.session_pids(job.pid)
    else:
        found = set()
    if job.pid is not None and procs.is_alive(job.pid, job.start_ticks):
        found.add(job.pid)
    return found


def freeze(job: Job, frozen: bool) -> None:
    """Freeze (or thaw) every process of the job; returns once the kernel says so.
    Raises OSError, or TimeoutError when SIGSTOPped processes do not read stopped in time."""
    if job.cgroup is not None and job.cgroup.has_freezer():
        job.cgroup.set_frozen(frozen)
        return
    sig = signal.SIGSTOP if frozen else signal.SIGCONT
    pids = job_pids(job)
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


def is_frozen(job: Job) -> bool:
    """Does the kernel report the job frozen (cgroup freezer) or all its processes stopped?"""
    if job.cgroup is not None and job.cgroup.has_freezer():
        with contextlib.suppress(OSError):
            return job.cgroup.is_frozen()
        return False
    pids = job_pids(job)
    return bool(pids) and all(procs.state_of(p) in ("T", "t") for p in pids)


def signal_job(job: Job, sig: int) -> None:
    """Send ``sig`` to the job's process group and to each of its processes."""
    if job.pid and procs.is_alive(job.pid, job.start_ticks):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(job.pid, sig)
    for pid in job_pids(job):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def signal_group(job: Job, sig: int) -> None:
    """Send ``sig`` once, to the job's process group only (its main process if the group is gone)."""
    if job.pid is None:
        return
    try:
        os.killpg(job.pid, sig)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(job.pid, sig)


def kill_now(job: Job) -> None:
    """SIGKILL every process of the job (frozen first where a freezer exists), then thaw."""
    if job.cgroup is not None:
        job.cgroup.kill_all(KILL_TIMEOUT_S)
    deadline = time.monotonic() + KILL_TIMEOUT_S
    while True:
        pids = job_pids(job)
        if not pids or time.monotonic() > deadline:
            break
        signal_job(job, signal.SIGKILL)
        if job.cgroup is None:
            signal_job(job, signal.SIGCONT)
        time.sleep(0.01)


def kill_leftovers(job: Job) -> int:
    """Kill what remains of an ended job and remove its cgroup; the number of processes found."""
    if job.cgroup is not None:
        leftovers = procs.live(job.cgroup.pids())
        if leftovers:
            job.cgroup.kill_all(KILL_TIMEOUT_S)
        job.cgroup.remove()
        return len(leftovers)
    if job.pid:
        found = procs.session_pids(job.pid)
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(found)
    return 0


def apply_priority(job: Job) -> None:
    """Give the job's processes the nice and cgroup CPU/IO weight of its priority."""
    if job.cgroup is not None:
        job.cgroup.set_priority(job.priority)
    nice = priority_nice(job.priority)
    for pid in job_pids(job):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, pid, nice)
    if (job.cgroup is None or not job.cgroup.has_cpu_weight()) and job.pid:
        # Without a cpu cgroup the job's session is its own autogroup: nice that instead.
        with contextlib.suppress(OSError):
            Path(f"/proc/{job.pid}/autogroup").write_text(str(nice))


def oom_killed(job: Job) -> bool:
    """Did the kernel OOM-kill a process of the job (its cgroup's memory events say so)?"""
    if job.cgroup is None:
        return False
    for key, name in (("memory", "memory.oom_control"), ("unified", "memory.events")):
        path = job.cgroup.paths.get(key)
        if path is not None and read_keyed(path / name).get("oom_kill", 0) > 0:
            return True
    return False
