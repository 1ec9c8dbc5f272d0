"""Launching a job through the shim, and reading how it ended: functions that return results.

The manager journals and records; these functions only build the launch, start the shim, wait
for it (without any lock: see :func:`await_start`) and read the files the shim writes
(``pid.json``, ``exit.json``, ``claim-<token>``). None of them changes a job's record.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentd.control import criu, procs
from agentd.control.cgroups import CgroupLayout, JobCgroup
from agentd.control.job import Job
from agentd.control.process import priority_nice
from agentd.control.spec import signal_number
from agentd.kernel import cgroupfs
from agentd.protocol.jobs import JobSpec

log = logging.getLogger(__name__)

SHIM_PATH = Path(__file__).with_name("shim.py")
SHIM_START_TIMEOUT_S = 10.0
EXIT_FILE_WAIT_S = 1.5
LOG_KEEP = 2


class LaunchError(Exception):
    """The job cannot be launched; ``reason`` says why in words (the job ends failed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class LaunchPlan:
    """What :func:`prepare_launch` made: the job's cgroup (or None: pgroup control) and the
    launch.json content the shim reads."""

    cgroup: JobCgroup | None
    control: str
    launch: dict[str, Any]


@dataclass(frozen=True)
class Started:
    pid: int
    start_ticks: int


@dataclass(frozen=True)
class StartFailed:
    reason: str
    shim_reaped: bool  # the shim ended and was reaped here


@dataclass(frozen=True)
class ExitRecord:
    """exit.json as the shim wrote it."""

    exit_code: int | None
    signal: int | None
    ended_s: float | None


def run_as_user(spec: JobSpec) -> pwd.struct_passwd | None:
    """The account a job drops to, or None when it runs as agentd's own user (today's root
    jobs: no privilege boundary is crossed, so they keep agentd's environment and cwd).
    Raises KeyError when the user no longer exists."""
    if spec.user is None:
        return None
    pw = pwd.getpwnam(spec.user)
    return None if pw.pw_uid == os.geteuid() else pw


def base_env(run_as: pwd.struct_passwd | None) -> dict[str, str]:
    """The environment a job starts from, before its spec's env and the AGENTD_* variables.

    A job of agentd's own user inherits agentd's environment. A job of another user gets none
    of it (it may hold the service's secrets): only PATH, the locale, and that user's
    HOME/USER/LOGNAME/SHELL, as a login would give.
    """
    if run_as is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")}
    else:
        env = {k: v for k, v in os.environ.items() if k == "LANG" or k.startswith("LC_")}
        env.update(PATH=os.environ.get("PATH", os.defpath), HOME=run_as.pw_dir, USER=run_as.pw_name,
                   LOGNAME=run_as.pw_name, SHELL=run_as.pw_shell or "/bin/sh")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def prepare_checkpoint_dir(job: Job, run_as: pwd.struct_passwd | None) -> None:
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
        # contents are the owner's already (written by the job or handed over before any
        # process of the job existed).
        os.chown(ckpt, run_as.pw_uid, run_as.pw_gid, follow_symlinks=False)
    os.chmod(ckpt, 0o700)


def stale_cgroup_pids(layout: CgroupLayout, n: int) -> set[int]:
    """Live processes already in job ``n``'s cgroup dirs (left by a job whose number was reused
    after a lost state store, or by anyone else): never adopted."""
    found: set[int] = set()
    for base in layout.bases.values():
        path = base / f"job-{n}"
        if path.is_dir():
            found |= procs.live(cgroupfs.tree_pids(path))
    return found


def prepare_launch(job: Job, gpus: list[int], *, layout: CgroupLayout | None, node: str, report_path: Path,
                   report_open: bool, log_max_bytes: int) -> LaunchPlan:
    """Create the job's cgroup and checkpoint dir and build its launch.json. Raises LaunchError
    (nothing is left behind then). A cgroup that cannot be made falls back to pgroup control."""
    cgroup, control = None, "pgroup"
    if layout is not None:
        stale = stale_cgroup_pids(layout, job.n)
        if stale:
            raise LaunchError(f"its cgroup job-{job.n} under {layout.bases} already holds processes "
                              f"{sorted(stale)} that are not this job's; agentd does not adopt them "
                              "(end them, then resubmit)")
        try:
            cgroup = layout.create(f"job-{job.n}")
            control = layout.control
            cgroup.set_priority(job.priority)
            cgroup.set_limits(job.spec.cpus, job.spec.memory_bytes)
        except OSError as e:
            log.warning("cannot create a cgroup for %s (%s); using process-group control",
                        job.id, e)
            cgroup, control = None, "pgroup"
    try:
        return _build(job, gpus, cgroup, control, node=node, report_path=report_path, report_open=report_open,
                      log_max_bytes=log_max_bytes)
    except LaunchError:
        if cgroup is not None:
            cgroup.remove()
        raise


def _build(job: Job, gpus: list[int], cgroup: JobCgroup | None, control: str, *, node: str, report_path: Path,
           report_open: bool, log_max_bytes: int) -> LaunchPlan:
    try:
        run_as = run_as_user(job.spec)
    except KeyError:
        raise LaunchError(f"user {job.spec.user!r} no longer exists on node {node}") from None
    try:
        prepare_checkpoint_dir(job, run_as)
    except OSError as e:
        raise LaunchError(f"cannot prepare the checkpoint dir {job.checkpoint_dir}: {e.strerror or e}") from None
    env = base_env(run_as)
    env.update(job.spec.env)
    env.update({
        "AGENTD_JOB_ID": job.id,
        "AGENTD_REPORT": str(report_path),
        "AGENTD_CHECKPOINT_DIR": str(job.checkpoint_dir),
        "AGENTD_RESUME": "1" if job.resume else "0",
        "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus),
    })
    if job.spec.counters:
        env["AGENTD_COUNTERS"] = ",".join(job.spec.counters)
    if job.spec.checkpoint is not None:
        env["AGENTD_CHECKPOINT_SIGNAL"] = signal.Signals(signal_number(job.spec.checkpoint.signal)).name
    if cgroup is not None:
        env["AGENTD_CGROUP_DIRS"] = os.pathsep.join(str(p) for k, p in cgroup.paths.items()
                                                    if cgroup.version == 2 or k != "unified")
    cwd = job.spec.cwd if job.spec.cwd is not None or run_as is None else run_as.pw_dir
    nice = priority_nice(job.priority)
    launch: dict[str, Any] = {
        "job_id": job.id, "argv": job.spec.argv, "shell": job.spec.shell, "cwd": cwd,
        "user": job.spec.user, "env": env, "nice": nice,
        "run_as": None if run_as is None else {"name": run_as.pw_name, "uid": run_as.pw_uid, "gid": run_as.pw_gid},
        "autogroup_nice": nice if cgroup is None or not cgroup.has_cpu_weight() else None,
        "cgroup_procs": cgroup.procs_files() if cgroup else [],
        "report_path": str(report_path) if report_open else None,
        "log_max_bytes": log_max_bytes, "log_keep": LOG_KEEP}
    if job.restore_images:
        try:
            launch["criu_restore"] = criu.restore_launch(Path(job.restore_images))
        except (criu.CriuError, OSError, ValueError) as e:
            raise LaunchError(f"cannot restore the job's CRIU image: {e}") from None
    return LaunchPlan(cgroup=cgroup, control=control, launch=launch)


def spawn_shim(job_dir: Path) -> int:
    """Start the shim for ``job_dir`` in its own session; its pid. Raises OSError."""
    shim_log = os.open(job_dir / "shim.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    try:
        return os.posix_spawn(sys.executable, [sys.executable, "-I", "-S", str(SHIM_PATH), str(job_dir)],
                              {"PATH": os.environ.get("PATH", os.defpath)}, setsid=True,
                              # whatever thread launches, the shim starts with no blocked
                              # signals and default SIGCHLD/SIGPIPE handling
                              setsigmask=(), setsigdef=(signal.SIGCHLD, signal.SIGPIPE),
                              file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                                            (os.POSIX_SPAWN_DUP2, shim_log, 1),
                                            (os.POSIX_SPAWN_DUP2, shim_log, 2)])
    finally:
        os.close(shim_log)


def await_start(job_dir: Path, shim_pid: int, timeout_s: float | None = None) -> Started | StartFailed:
    """Wait until the shim reports the job exec'd (pid.json), or it ended, or ``timeout_s``.
    Call it holding no lock: a slow start must not stall anyone else."""
    timeout_s = SHIM_START_TIMEOUT_S if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    pid_file = job_dir / "pid.json"
    reaped = False
    while not pid_file.exists():
        ended = shim_ended(shim_pid)  # waitpid, not /proc: a reused pid cannot pass for it
        if ended is not None:
            reaped = True
            if pid_file.exists():
                break  # the job started and ended at once: exit.json tells the rest
        if ended is not None or time.monotonic() > deadline:
            detail = ""
            with contextlib.suppress(OSError):
                detail = (job_dir / "shim.log").read_text(errors="replace")[-500:].strip()
            why = ended if ended is not None else f"no job after {timeout_s:g} s"
            return StartFailed(f"the job's shim did not start ({why}): {detail or 'no output'}", reaped)
        time.sleep(0.003)
    data = json.loads(pid_file.read_text())
    return Started(pid=int(data["pid"]), start_ticks=int(data["start_ticks"]))


def read_exit(job_dir: Path) -> ExitRecord | None:
    """The job's exit.json, or None while there is none (or it is unreadable)."""
    try:
        raw = json.loads((job_dir / "exit.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    code, sig, ended = raw.get("exit_code"), raw.get("signal"), raw.get("ended_s")
    return ExitRecord(exit_code=code if isinstance(code, int) else None, signal=sig if isinstance(sig, int) else None,
                      ended_s=float(ended) if isinstance(ended, (int, float)) else None)


def wait_exit_file(job_dir: Path, shim_pid: int | None) -> None:
    """Give the shim up to EXIT_FILE_WAIT_S to write exit.json after the job's processes ended."""
    deadline = time.monotonic() + EXIT_FILE_WAIT_S
    while time.monotonic() < deadline and not (job_dir / "exit.json").exists():
        if not procs.is_alive(shim_pid):
            break
        time.sleep(0.01)


def exit_outcome(result: ExitRecord, *, cancelling: bool, cancel_reason: str, oom: bool) -> tuple[str, str]:
    """The terminal state and reason an exit.json means: (state, reason)."""
    if cancelling:
        return "cancelled", cancel_reason
    if result.exit_code == 0:
        return "succeeded", "exit code 0"
    if result.signal:
        return "failed", f"killed by {signal.Signals(result.signal).name}" + (" (out of memory)" if oom else "")
    return "failed", f"exit code {result.exit_code}"


@dataclass(frozen=True)
class Recovery:
    """What became of a launch journaled before an agentd restart. ``outcome``: ``revoked`` (it
    never ran; start it again), ``started`` (adopt ``pid``), ``failed`` (``reason``)."""

    outcome: str
    reason: str = ""
    shim_pid: int | None = None
    pid: int | None = None
    start_ticks: int | None = None
    started_s: float | None = None


def recover_launch(job_dir: Path, token: str) -> Recovery:
    """Find out whether the shim started a launch agentd journaled before it died.

    Whoever creates ``claim-<token>`` first decides: we create it as ``revoked`` (the shim
    then refuses to start), or the shim already has it (the job started, or is starting).
    """
    link = job_dir / f"claim-{token}"
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
        return Recovery("failed", f"agentd was killed while starting it and cannot tell whether it "
                                  f"started ({link}: {target[11:]}); resubmit it if it did not run")
    if target.startswith("revoked"):
        return Recovery("revoked")
    _, _, rest = target.partition(":")
    shim_pid_s, _, shim_ticks_s = rest.partition(":")
    shim_pid, shim_ticks = int(shim_pid_s or 0), int(shim_ticks_s or 0)
    pid_file = job_dir / "pid.json"
    deadline = time.monotonic() + SHIM_START_TIMEOUT_S
    while not pid_file.exists() and time.monotonic() < deadline and procs.is_alive(shim_pid, shim_ticks):
        time.sleep(0.01)
    try:
        data = json.loads(pid_file.read_text())
    except (OSError, ValueError):
        data = None
    if data is None:
        if procs.is_alive(shim_pid, shim_ticks):
            with contextlib.suppress(OSError):
                os.killpg(shim_pid, signal.SIGKILL)
        return Recovery("failed", "agentd was killed while starting it and its shim never started it; resubmit it",
                        shim_pid=shim_pid)
    started_s = None
    with contextlib.suppress(OSError):
        started_s = pid_file.stat().st_mtime
    return Recovery("started", shim_pid=shim_pid, pid=int(data["pid"]), start_ticks=int(data["start_ticks"]),
                    started_s=started_s)


def shim_ended(pid: int) -> str | None:
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
