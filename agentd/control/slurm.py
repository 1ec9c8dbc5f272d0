"""Slurm as a job backend: list, pause, resume, reprioritise, cancel and requeue Slurm jobs
through Slurm's own commands (squeue, scontrol, scancel), never around Slurm.

The backend sits beside the local :class:`agentd.control.manager.JobManager` behind the same
method names (``jobs()``, ``get()``, ``pause()``, ``resume()``, ``set_priority()``,
``cancel()``, ``migrate()``). Its job ids are ``f"{node}.slurm-{jobid}"`` so the daemon routes
them here by the ``slurm-`` prefix; ``backend`` is ``"slurm"`` in every :class:`JobInfo`.

What the node shows:

* running, suspended and finished jobs whose allocation includes this Slurm node;
* pending jobs once, cluster-wide: on the first node of their ``ReqNodeList`` or, without one,
  on the first node of their partition (so an app watching every node sees each job once).

Slurm's priority is relative: agentd priority ``p`` (-10..10, higher is more important) becomes
``Nice=-p*NICE_PER_LEVEL``. It orders pending jobs; Slurm never changes the CPU share of a
running job. Migration is ``scontrol requeue``: Slurm restarts the job from its beginning (or
from the job's own checkpoint), optionally steered with ``ReqNodeList``/``ExcNodeList``.

Over 500 lines: one backend class whose every action is a Slurm command with its error
mapping; the parsing of what Slurm prints is in slurm_parse.py.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from agentd.control.slurm_parse import (
    FIELD_SEP,
    STATE_MAP,
    SlurmJob,
    expand_hostlist,
    parse_listpids,
    parse_squeue_format,
    parse_squeue_json,
    squeue_format,
)
from agentd.kernel import cgroupfs, procfs
from agentd.kernel.procfs import DEFAULT_PROC_ROOT
from agentd.protocol.errors import ErrorCode, ProtocolError
from agentd.protocol.jobs import TERMINAL_STATES, GroupMember, JobInfo, JobSpec
from agentd.protocol.limits import PRIORITY_MAX, PRIORITY_MIN
from agentd.telemetry.cgroup_paths import CgroupRef

log = logging.getLogger(__name__)

SLURM_PREFIX = "slurm-"
NICE_PER_LEVEL = 1000  # one agentd priority step outranks a thousand FIFO positions
DEFAULT_TIMEOUT_S = 15.0
DEFAULT_REFRESH_S = 2.0  # jobs() answers from a snapshot at most this old
STOP_WAIT_S = 8.0  # how long pause/resume wait for the processes to stop/continue
CANCEL_WAIT_S = 10.0
DEFAULT_AGENTD_PORT = 7710

class SlurmError(Exception):
    """A Slurm command failed; ``message`` is Slurm's own words."""

    def __init__(self, argv: list[str], returncode: int, message: str) -> None:
        super().__init__(message)
        self.argv = argv
        self.returncode = returncode
        self.message = message


# ---- running Slurm's commands ----------------------------------------------------------------

class SlurmCommands:
    """Runs Slurm's client commands with a given environment (``SLURM_CONF``) and a timeout."""

    def __init__(self, env: Mapping[str, str] | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 run_as: str | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self.timeout_s = timeout_s
        # Slurm decides what a caller may do by its uid: run_as makes the commands run as that
        # user (agentd as root acting for a user; tests of Slurm's refusals).
        self.run_as = run_as

    def which(self, name: str) -> str | None:
        return shutil.which(name, path=self.env.get("PATH", os.defpath))

    def run(self, argv: list[str]) -> str:
        """Stdout of ``argv``; raises :class:`SlurmError` with Slurm's message on failure."""
        exe = self.which(argv[0])
        if exe is None:
            raise SlurmError(argv, 127, f"{argv[0]} is not on PATH; install the Slurm client (slurm-client)")
        try:
            proc = subprocess.run([exe, *argv[1:]], env=self.env, capture_output=True, text=True,
                                  timeout=self.timeout_s, check=False, user=self.run_as, cwd="/")
        except subprocess.TimeoutExpired:
            raise SlurmError(argv, 124, f"{' '.join(argv)} did not answer within {self.timeout_s:g} s; is slurmctld up?") from None
        # Several Slurm commands print errors yet exit 0 (scancel on an unknown job), so any
        # "error:" line counts as a failure.
        errors = _slurm_errors(proc.stderr)
        if proc.returncode != 0 or errors:
            message = "; ".join(errors) or proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}"
            raise SlurmError(argv, proc.returncode or 1, message)
        return proc.stdout


def _slurm_errors(stderr: str) -> list[str]:
    out = []
    for line in stderr.splitlines():
        line = line.strip()
        m = re.match(r"^\S+: (?:error|fatal): (.*)$", line)
        if m:
            out.append(m.group(1))
        elif re.match(r"^slurm_\w+: ", line):  # "slurm_load_jobs: Protocol authentication error"
            out.append(line)
    return out


def detect_slurm(commands: SlurmCommands | None = None) -> str | None:
    """None when Slurm is usable from this node (scontrol on PATH, ``scontrol ping`` says UP),
    else the reason in words (for the log and for ``--slurm`` errors)."""
    cmds = commands or SlurmCommands(timeout_s=5.0)
    if cmds.which("scontrol") is None:
        return "scontrol is not on PATH (install slurm-client)"
    try:
        out = cmds.run(["scontrol", "ping"])
    except SlurmError as exc:
        if "configuration source" in exc.message:
            return ("scontrol finds no Slurm configuration (no /etc/slurm/slurm.conf, no SLURM_CONF, "
                    "no configless DNS record); this host is not set up as a Slurm node or client")
        return f"scontrol ping failed: {exc.message}"
    if " is UP" not in out:
        return f"scontrol ping: {out.strip() or 'no answer'}"
    return None


class SlurmUnavailable(RuntimeError):
    """``slurm = "on"`` but Slurm does not answer on this node; the message says why."""


def backend_for(node: str, mode: str = "auto", *, commands: SlurmCommands | None = None,
                slurm_node: str | None = None) -> SlurmBackend | None:
    """The daemon's switch (``--slurm auto|on|off``): a backend when Slurm answers here.

    ``auto``: a backend when scontrol is on PATH and ``scontrol ping`` says UP, else None
    (logged at info level). ``on``: raises :class:`SlurmUnavailable` instead of None.
    ``off``: always None.
    """
    if mode == "off":
        return None
    if mode not in ("auto", "on"):
        raise ValueError(f"slurm = {mode!r}; use 'auto', 'on' or 'off'")
    cmds = commands or SlurmCommands()
    reason = detect_slurm(cmds)
    if reason is not None:
        if mode == "on":
            raise SlurmUnavailable(f"--slurm on, but Slurm does not answer on node {node!r}: {reason}; "
                                   "start munge and slurmd, or run agentd with --slurm auto")
        log.info("Slurm backend off: %s", reason)
        return None
    backend = SlurmBackend(node, commands=cmds, slurm_node=slurm_node)
    log.info("Slurm backend on: this node is Slurm node %r", backend.slurm_node)
    return backend


def cgroup_mounts(proc_root: str = DEFAULT_PROC_ROOT) -> dict[str, str]:
    """Mount point of each cgroup v1 controller and of the v2 tree (``unified``) seen by agentd."""
    return procfs.cgroup_mounts(procfs.read_mountinfo("self", proc_root) or [])


def slurm_cgroup(pid: int, job_id: int, proc_root: str = DEFAULT_PROC_ROOT,
                 mounts: Mapping[str, str] | None = None) -> CgroupRef | None:
    """The cgroup Slurm made for ``job_id`` (proctrack/cgroup), found from one of its pids.

    Slurm names it ``.../job_<id>`` (v1: ``/slurm/uid_0/job_5/step_batch``; v2:
    ``/system.slice/slurmstepd.scope/job_5/...``). None when the job has no cgroup of its own
    (proctrack/linuxproc or pgid).
    """
    membership = procfs.read_cgroup_membership(pid, proc_root)
    if membership is None:
        return None
    mounts = cgroup_mounts(proc_root) if mounts is None else mounts
    marker = f"job_{job_id}"
    v1: dict[str, str] = {}
    unified: str | None = None
    for ctrl, path in membership.items():
        segments = path.strip("/").split("/")
        if marker not in segments:
            continue
        rel = "/".join(segments[: segments.index(marker) + 1])
        if ctrl == "":
            if "unified" in mounts:
                unified = os.path.join(mounts["unified"], rel)
        elif ctrl in mounts:
            v1[ctrl] = os.path.join(mounts[ctrl], rel)
    if v1:
        if unified:
            v1["unified"] = unified
        return CgroupRef(version=1, paths=v1)
    if unified:
        return CgroupRef(version=2, paths={"unified": unified})
    return None


def _proc_state(proc_root: str, pid: int) -> str | None:
    st = procfs.read_stat(pid, proc_root)
    return st.state if st else None


def _cgroup_frozen(ref: CgroupRef) -> bool | None:
    return cgroupfs.is_frozen(ref.paths)


# ---- the backend -----------------------------------------------------------------------------

class SlurmBackend:
    """Slurm jobs of one node, as :class:`JobInfo`, and Slurm's own actions on them.

    ``node`` is agentd's node name (the prefix of job ids); ``slurm_node`` the name Slurm uses
    for this host (default: the short hostname). ``commands`` carries the environment
    (``SLURM_CONF``) and timeout; ``proc_root`` is where pids and cgroups are read.
    """

    def __init__(
        self,
        node: str,
        *,
        slurm_node: str | None = None,
        commands: SlurmCommands | None = None,
        proc_root: str = DEFAULT_PROC_ROOT,
        refresh_s: float = DEFAULT_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
        use_json: bool | None = None,
    ) -> None:
        self.node = node
        self.slurm_node = slurm_node or socket.gethostname().split(".")[0]
        self.cmds = commands or SlurmCommands()
        self.proc_root = proc_root
        self.refresh_s = refresh_s
        self.clock = clock
        self._use_json = use_json  # None: try --json once, fall back to --format
        self._lock = threading.Lock()
        self._cache: tuple[float, list[JobInfo]] | None = None
        self._partitions: tuple[float, dict[str, list[str]]] | None = None
        self._refs: dict[str, tuple[CgroupRef | None, list[int]]] = {}
        self._reported: dict[str, tuple[object, ...]] = {}  # job id -> what was last reported

    # ---- ids ---------------------------------------------------------------------------------
    def job_id(self, slurm_id: int) -> str:
        return f"{self.node}.{SLURM_PREFIX}{slurm_id}"

    def owns(self, job_id: str) -> bool:
        """True for ids this backend answers: ``node.slurm-N`` or ``slurm-N``."""
        return job_id.startswith((f"{self.node}.{SLURM_PREFIX}", SLURM_PREFIX))

    def slurm_id(self, job_id: str) -> int:
        """Slurm's numeric job id from ``node.slurm-N``, ``slurm-N`` or ``N``."""
        text = job_id
        if text.startswith(self.node + "."):
            text = text[len(self.node) + 1:]
        if text.startswith(SLURM_PREFIX):
            text = text[len(SLURM_PREFIX):]
        if not text.isdigit():
            raise ProtocolError(ErrorCode.NOT_FOUND, f"job {job_id!r} is not a Slurm job of node {self.node!r} "
                                f"(Slurm job ids here look like {self.job_id(42)!r})", "job")
        return int(text)

    # ---- reading -----------------------------------------------------------------------------
    def _squeue(self, extra: list[str]) -> list[SlurmJob]:
        if self._use_json is not False:
            try:
                jobs = parse_squeue_json(self.cmds.run(["squeue", "--json", *extra]))
                self._use_json = True
                return jobs
            except SlurmError as exc:
                if self._use_json or ("json" not in exc.message.lower() and "unrecognized" not in exc.message.lower()):
                    raise
            except (ValueError, KeyError, TypeError) as exc:
                if self._use_json:
                    raise SlurmError(["squeue", "--json"], 1, f"squeue --json printed something unexpected: {exc}") from None
            log.info("squeue --json is not available here; using squeue --format")
            self._use_json = False
        return parse_squeue_format(self.cmds.run(["squeue", "-h", "-o", squeue_format(), *extra]))

    def _partition_nodes(self) -> dict[str, list[str]]:
        now = self.clock()
        if self._partitions is not None and now - self._partitions[0] < 60.0:
            return self._partitions[1]
        out: dict[str, list[str]] = {}
        for line in self.cmds.run(["sinfo", "-h", "-o", f"%R{FIELD_SEP}%N"]).splitlines():
            part, _, nodes = line.partition(FIELD_SEP)
            if part:
                out.setdefault(part.strip(), []).extend(expand_hostlist(nodes))
        self._partitions = (now, out)
        return out

    def _is_mine(self, j: SlurmJob) -> bool:
        if j.nodes:
            return self.slurm_node in j.nodes
        # Pending, or finished without ever running (cancelled while pending): shown once,
        # by the node that showed it while it was pending.
        if j.req_nodes:
            return j.req_nodes[0] == self.slurm_node
        candidates = [n for n in self._partition_nodes().get(j.partition, []) if n not in j.exc_nodes]
        return bool(candidates) and candidates[0] == self.slurm_node

    def _info(self, j: SlurmJob) -> JobInfo:
        state = STATE_MAP.get(j.state)
        reason = "" if j.reason in ("None", "") else j.reason
        if state is None:
            log.warning("Slurm job %s has state %s, which agentd does not know; showing it as queued", j.job_id, j.state)
            state, reason = "queued", f"Slurm state {j.state}"
        pids: list[int] = []
        ref: CgroupRef | None = None
        if state in ("running", "paused") and self.slurm_node in j.nodes:
            pids = self._pids(j.job_id)
            for pid in pids:
                ref = slurm_cgroup(pid, j.job_id, self.proc_root)
                if ref is not None:
                    break
        jid = self.job_id(j.job_id)
        if pids:
            self._refs[jid] = (ref, pids)
        else:
            self._refs.pop(jid, None)
        priority = max(PRIORITY_MIN, min(PRIORITY_MAX, round(-j.nice / NICE_PER_LEVEL)))
        argv = [j.command] if j.command and j.command != "(null)" else [j.name]
        labels = {"slurm_job_id": str(j.job_id), "partition": j.partition, "slurm_state": j.state,
                  "slurm_priority": str(j.priority), "slurm_nice": str(j.nice), "user": j.user}
        if j.restarts:
            labels["slurm_restarts"] = str(j.restarts)
        spec = JobSpec(argv=argv, name=j.name, cwd=j.workdir or None, priority=priority,
                       labels={k: v for k, v in labels.items() if v}, group=self._slurm_group(j))
        cgroup = None
        if ref is not None:
            cgroup = ref.paths.get("unified") if ref.version == 2 else (
                ref.paths.get("memory") or ref.paths.get("cpuacct") or next(iter(ref.paths.values())))
        return JobInfo(
            id=jid, node=self.node, name=j.name or f"slurm-{j.job_id}", state=state,  # type: ignore[arg-type]
            spec=spec, priority=priority, backend="slurm", owner=j.user, pid=pids[0] if pids else None, pids=pids,
            cgroup=cgroup, control="slurm", exit_code=j.exit_code if state in TERMINAL_STATES else None,
            reason=reason, submitted_s=j.submit_s, started_s=j.start_s if state != "queued" else None,
            ended_s=j.end_s if state in TERMINAL_STATES else None,
        )

    def _slurm_group(self, j: SlurmJob) -> GroupMember | None:
        """A job Slurm runs on several nodes is one group, each node's part a rank of it (in
        Slurm's node order), so `agentctl jobs` and the app show it as one row. It names no
        leader: Slurm, not Fleetdeck's gang admission, starts and stops it."""
        if len(j.nodes) < 2 or self.slurm_node not in j.nodes:
            return None
        index = j.nodes.index(self.slurm_node)
        return GroupMember(id=f"slurm-{j.job_id}", rank=index, world_size=len(j.nodes), role="slurm",
                           node_rank=index)

    def _pids(self, slurm_id: int) -> list[int]:
        try:
            return parse_listpids(self.cmds.run(["scontrol", "listpids", str(slurm_id)]))
        except SlurmError as exc:  # the job may just have ended; the next refresh says so
            log.debug("scontrol listpids %s: %s", slurm_id, exc.message)
            return []

    def _refresh(self) -> list[JobInfo]:
        jobs = [self._info(j) for j in self._squeue(["-t", "all"]) if self._is_mine(j)]
        live = {j.id for j in jobs}
        for stale in [k for k in self._refs if k not in live]:
            del self._refs[stale]
        self._cache = (self.clock(), jobs)
        return jobs

    def jobs(self, active_only: bool = False) -> list[JobInfo]:
        """This node's Slurm jobs (see the module docstring for which), newest snapshot at most
        ``refresh_s`` old. Raises ProtocolError(UNAVAILABLE) when Slurm does not answer."""
        with self._lock:
            if self._cache is None or self.clock() - self._cache[0] >= self.refresh_s:
                try:
                    self._refresh()
                except SlurmError as exc:
                    raise ProtocolError(ErrorCode.UNAVAILABLE, f"Slurm did not list jobs: {exc.message}") from None
            assert self._cache is not None
            jobs = self._cache[1]
        if active_only:
            return [j for j in jobs if j.state not in TERMINAL_STATES]
        return list(jobs)

    def get(self, job_id: str) -> JobInfo:
        """One Slurm job, fresh from Slurm (any node's job: Slurm answers for all of them)."""
        sid = self.slurm_id(job_id)
        try:
            found = self._squeue(["-t", "all", "-j", str(sid)])
        except SlurmError as exc:
            if "invalid job id" in exc.message.lower():
                found = []
            else:
                raise _protocol_error(exc, self.job_id(sid)) from None
        found = [j for j in found if j.job_id == sid]
        if not found:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"Slurm job {sid} ({self.job_id(sid)!r}) is unknown to Slurm "
                                "(finished jobs are forgotten after MinJobAge)", "job")
        return self._info(found[0])

    def poll_changes(self) -> list[JobInfo]:
        """Jobs that appeared or changed (state, priority, pids, reason) since the last call,
        for the daemon's stream: Slurm has no push, so the daemon calls this once a tick.
        Jobs that Slurm forgot (after MinJobAge) are not reported again."""
        try:
            current = self.jobs()
        except ProtocolError as exc:
            log.warning("%s", exc.message)
            return []
        changed = []
        seen: dict[str, tuple[object, ...]] = {}
        for job in current:
            key = (job.state, job.priority, tuple(job.pids), job.reason, job.exit_code)
            seen[job.id] = key
            if self._reported.get(job.id) != key:
                changed.append(job)
        self._reported = seen
        return changed

    def probes(self) -> dict[str, tuple[CgroupRef | None, list[int]]]:
        """For telemetry, like JobManager.probes(): each running or suspended job on this node
        -> (Slurm's cgroup of it where proctrack/cgroup made one, else None; its pids)."""
        with self._lock:
            return dict(self._refs)

    def cgroup_ref(self, job_id: str) -> CgroupRef | None:
        """Slurm's cgroup of a job on this node as of the last listing (None: none of its own)."""
        with self._lock:
            entry = self._refs.get(job_id)
        return entry[0] if entry else None

    def invalidate(self) -> None:
        with self._lock:
            self._cache = None

    # ---- actions -----------------------------------------------------------------------------
    def _act(self, argv: list[str], job: JobInfo, actor: str = "") -> None:
        log.info("slurm: %s (for %s, asked by %s)", " ".join(argv), job.id, actor or "unknown")
        try:
            self.cmds.run(argv)
        except SlurmError as exc:
            raise _protocol_error(exc, job.id) from None
        finally:
            self.invalidate()

    def pause(self, job_id: str, actor: str = "") -> JobInfo:
        """``scontrol suspend``; replies once the job's processes have stopped (or
        ``STOP_WAIT_S`` passed). No-op when already suspended."""
        job = self.get(job_id)
        if job.state == "paused":
            return job
        if job.state != "running":
            raise ProtocolError(ErrorCode.CONFLICT, f"Slurm job {job.id!r} is {job.state}; Slurm suspends only running jobs", "job")
        self._act(["scontrol", "suspend", str(self.slurm_id(job.id))], job, actor)
        self._wait_processes(job, stopped=True)
        return self.get(job.id)

    def resume(self, job_id: str, actor: str = "") -> JobInfo:
        """``scontrol resume``; replies once the processes run again. No-op when running."""
        job = self.get(job_id)
        if job.state == "running":
            return job
        if job.state != "paused":
            raise ProtocolError(ErrorCode.CONFLICT, f"Slurm job {job.id!r} is {job.state}; only a suspended job can be resumed", "job")
        self._act(["scontrol", "resume", str(self.slurm_id(job.id))], job, actor)
        self._wait_processes(job, stopped=False)
        return self.get(job.id)

    def _wait_processes(self, job: JobInfo, stopped: bool) -> bool:
        """Poll until every process of ``job`` on this node is stopped (or running again)."""
        sid = self.slurm_id(job.id)
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline:
            pids = self._pids(sid)
            if not pids:
                return True
            ref = None
            for pid in pids:
                ref = slurm_cgroup(pid, sid, self.proc_root)
                if ref is not None:
                    break
            frozen = _cgroup_frozen(ref) if ref is not None else None
            if frozen is not None:
                if frozen == stopped:
                    return True
            else:
                states = [_proc_state(self.proc_root, p) for p in pids]
                alive = [s for s in states if s is not None]
                if all((s in ("T", "t")) == stopped for s in alive):
                    return True
            time.sleep(0.1)
        log.warning("Slurm job %s: processes not %s after %.0f s", job.id, "stopped" if stopped else "running", STOP_WAIT_S)
        return False

    def set_priority(self, job_id: str, priority: int, actor: str = "") -> JobInfo:
        """Set the Slurm nice value from an agentd priority (``Nice=-priority*NICE_PER_LEVEL``).

        Slurm uses it to order pending jobs; on a running job it is recorded for a later
        requeue but changes nothing now (the reply's ``reason`` says so)."""
        job = self.get(job_id)
        if job.state in TERMINAL_STATES:
            raise ProtocolError(ErrorCode.CONFLICT, f"Slurm job {job.id!r} has finished ({job.state}); "
                                "Slurm priorities only order pending jobs", "job")
        nice = -priority * NICE_PER_LEVEL
        self._act(["scontrol", "update", f"JobId={self.slurm_id(job.id)}", f"Nice={nice}"], job, actor)
        updated = self.get(job.id)
        if updated.state != "queued":
            note = (f"Slurm recorded Nice={nice}; Slurm priority orders pending jobs and does not change "
                    f"the CPU share of a {updated.state} job")
            updated = _with_reason(updated, note)
        return updated

    def cancel(self, job_id: str, grace_s: float = 10.0, actor: str = "") -> JobInfo:
        """``scancel``: Slurm sends SIGTERM, then SIGKILL after its KillWait (suspended jobs
        too). Waits up to ``CANCEL_WAIT_S`` for Slurm to report the job over. No-op when over."""
        job = self.get(job_id)
        if job.state in TERMINAL_STATES:
            return job
        self._act(["scancel", str(self.slurm_id(job.id))], job, actor)
        deadline = time.monotonic() + CANCEL_WAIT_S
        while True:
            job = self.get(job.id)
            if job.state in TERMINAL_STATES or time.monotonic() >= deadline:
                return job
            time.sleep(0.2)

    def migrate(self, job_id: str, target: str = "", *, exclude_self: bool = False, restart: bool = True,
                resume: bool = False, actor: str = "", **_: Any) -> JobInfo:
        """Requeue through Slurm: ``scontrol requeue``, then steer it with ``ReqNodeList``
        (``target``: a Slurm node name or an agentd endpoint ``tcp://HOST:PORT``) or
        ``ExcNodeList`` (``exclude_self``). Slurm restarts the job from the beginning; a job
        that checkpoints itself resumes from its own checkpoint. Never a live move."""
        job = self.get(job_id)
        sid = self.slurm_id(job.id)
        if job.state in TERMINAL_STATES:
            raise ProtocolError(ErrorCode.CONFLICT, f"Slurm job {job.id!r} has finished ({job.state}); submit it again instead", "job")
        target_node = self.resolve_node(target) if target else ""
        if target_node and target_node == self.slurm_node and job.state != "queued":
            log.info("Slurm job %s: migrate target is this node; requeueing restarts it here", job.id)
        if job.state != "queued":
            self._act(["scontrol", "requeue", str(sid)], job, actor)
        hints = []
        if target_node:
            hints.append(f"ReqNodeList={target_node}")
        if exclude_self:
            hints.append(f"ExcNodeList={self.slurm_node}")
        if hints:
            self._act(["scontrol", "update", f"JobId={sid}", *hints], job, actor)
        where = f"on {target_node}" if target_node else ("on another node" if exclude_self else "wherever Slurm places it")
        note = (f"Slurm requeued job {sid}: it restarts from the beginning (or from its own checkpoint) {where}; "
                "Slurm does not move a running process")
        return _with_reason(self.get(job.id), note)


    def resolve_node(self, target: str) -> str:
        """The Slurm node name for ``target``: a node name, hostname, address or endpoint."""
        host = urlsplit(target).hostname if "://" in target else target
        host = (host or "").strip()
        try:
            rows = self.cmds.run(["sinfo", "-h", "-N", "-o", f"%N{FIELD_SEP}%n{FIELD_SEP}%o"]).splitlines()
        except SlurmError as exc:
            raise _protocol_error(exc, target) from None
        names = []
        for row in rows:
            parts = [p.strip() for p in row.split(FIELD_SEP)]
            if len(parts) == 3:
                names.append(parts[0])
                if host in parts or host.split(".")[0] == parts[0]:
                    return parts[0]
        raise ProtocolError(ErrorCode.INVALID, f"migrate target {target!r} is not a node of this Slurm cluster "
                            f"(nodes: {', '.join(sorted(set(names))) or 'none'})", "target")

    def close(self) -> None:
        """Nothing to release: every call is a short-lived Slurm command."""


def _with_reason(job: JobInfo, note: str) -> JobInfo:
    import msgspec

    reason = f"{note} (Slurm: {job.reason})" if job.reason else note
    return msgspec.structs.replace(job, reason=reason)


def _protocol_error(exc: SlurmError, what: str) -> ProtocolError:
    """Slurm's message, with the error code a client can switch on."""
    msg = exc.message
    low = msg.lower()
    text = f"Slurm refused {' '.join(exc.argv[:2])} for {what!r}: {msg}"
    if "invalid job id" in low or "unknown job" in low:
        return ProtocolError(ErrorCode.NOT_FOUND, text, "job")
    if ("access" in low and "denied" in low) or "permission" in low or "not authorized" in low:
        return ProtocolError(ErrorCode.UNAUTHORIZED, text + " (Slurm allows this only to the job's owner or an operator)", "job")
    if "already" in low or "pending" in low or "suspended" in low or "not running" in low or "disabled" in low \
            or "completing" in low or "completed" in low or "not suspended" in low:
        return ProtocolError(ErrorCode.CONFLICT, text, "job")
    if exc.returncode in (124, 127):
        return ProtocolError(ErrorCode.UNAVAILABLE, text)
    return ProtocolError(ErrorCode.FAILED, text)


# ---- the cluster file from sinfo -------------------------------------------------------------

@dataclass(frozen=True)
class SlurmNode:
    name: str
    hostname: str
    addr: str
    partitions: tuple[str, ...]


def slurm_nodes(commands: SlurmCommands | None = None, partition: str | None = None) -> list[SlurmNode]:
    """Every node ``sinfo`` knows (optionally one partition's), with its partitions."""
    cmds = commands or SlurmCommands()
    argv = ["sinfo", "-h", "-N", "-o", f"%N{FIELD_SEP}%n{FIELD_SEP}%o{FIELD_SEP}%R"]
    if partition:
        argv += ["-p", partition]
    order: list[str] = []
    info: dict[str, tuple[str, str, list[str]]] = {}
    for row in cmds.run(argv).splitlines():
        parts = [p.strip() for p in row.split(FIELD_SEP)]
        if len(parts) != 4 or not parts[0]:
            continue
        name, host, addr, part = parts
        if name not in info:
            order.append(name)
            info[name] = (host, addr, [])
        if part and part not in info[name][2]:
            info[name][2].append(part)
    return [SlurmNode(n, info[n][0], info[n][1], tuple(info[n][2])) for n in order]
