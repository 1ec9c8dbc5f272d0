"""Library-level migration fixtures: two in-process nodes that run real trainer processes.

``ProcJobs`` is a minimal job runner (real subprocesses in their own sessions, SIGSTOP for
pause) implementing the SourceJobs/TargetJobs hooks, so the migration state machine is
tested against real processes before the daemon's JobManager is wired in. ``DirectClient``
carries requests to the target through the real codec (encode -> decode_request -> handle ->
encode -> decode_reply) and can inject faults.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agentd.control import procs
from agentd.control.migration import MigrationSource, SourceOptions
from agentd.control.migration_target import MigrationTarget
from agentd.protocol import ErrorCode, ProtocolError, decode_reply, decode_request, encode
from agentd.protocol.jobs import CheckpointContract, Event, JobInfo, JobSpec
from agentd.protocol.messages import ErrorReply, Hello, HelloReply
from agentd.store.migration_journal import MigrationJournal
from tests.waiting import wait_for  # noqa: F401 - the tests import it from here

TRAINER = Path(__file__).with_name("ckpt_trainer.py")


class StubRemoteError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StubUnreachable(Exception):
    """No ``code``: a connection failure, like the transport's Unreachable."""


@dataclass
class _Job:
    info: JobInfo
    proc: subprocess.Popen | None = None
    ckpt_dir: Path | None = None
    exit_code: int | None = None
    holding: bool = False  # inside a migration: an exit is not terminal


class ProcJobs:
    """Real processes, one per job; implements SourceJobs and TargetJobs."""

    def __init__(self, node: str, root: Path, free_gpus: int = 8) -> None:
        self.node = node
        self.root = root
        self.free_gpus = free_gpus
        self.jobs: dict[str, _Job] = {}
        self.lock = threading.Lock()
        self.n = 0
        self.arrivals: list[dict[str, Any]] = []  # what start_resumed was given, in order

    # -- plain job control used by the tests --
    def submit(self, spec: JobSpec, *, queued: bool = False, resumed_from: str | None = None,
               ckpt_dir: Path | None = None, paused: bool = False) -> JobInfo:
        with self.lock:
            self.n += 1
            jid = f"{self.node}.{self.n}"
        d = ckpt_dir or (self.root / "ckpt" / jid)
        j = _Job(info=JobInfo(id=jid, node=self.node, name=spec.name, state="queued", spec=spec, resumed_from=resumed_from), ckpt_dir=d)
        self.jobs[jid] = j
        if not queued:
            self._launch(j, resume=ckpt_dir is not None, paused=paused)
        return j.info

    def _launch(self, j: _Job, resume: bool, paused: bool = False) -> None:
        env = {**os.environ, **j.info.spec.env, "AGENTD_JOB_ID": j.info.id, "AGENTD_CHECKPOINT_DIR": str(j.ckpt_dir)}
        if resume:
            env["AGENTD_RESUME"] = "1"
        env.pop("PYTEST_CURRENT_TEST", None)
        j.proc = subprocess.Popen(j.info.spec.argv, env=env, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        j.exit_code = None
        j.holding = False
        self._set(j, state="running", pid=j.proc.pid)
        if paused:
            os.killpg(j.proc.pid, signal.SIGSTOP)
            self._set(j, state="paused")

    def _set(self, j: _Job, **changes: Any) -> None:
        j.info = msgspec.structs.replace(j.info, **changes)

    def pause(self, jid: str) -> None:
        j = self.jobs[jid]
        os.killpg(j.proc.pid, signal.SIGSTOP)
        self._set(j, state="paused")

    def alive(self) -> list[str]:
        return [jid for jid, j in self.jobs.items() if j.proc is not None and j.proc.poll() is None]

    def kill_all(self) -> None:
        for j in self.jobs.values():
            if j.proc is not None and j.proc.poll() is None:
                os.killpg(j.proc.pid, signal.SIGKILL)
                os.killpg(j.proc.pid, signal.SIGCONT)
                j.proc.wait(5)

    # -- SourceJobs --
    def get(self, job_id: str) -> JobInfo:
        if job_id not in self.jobs:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no job {job_id!r}", "job")
        j = self.jobs[job_id]
        exit_code = j.proc.poll() if j.proc is not None else None
        return msgspec.structs.replace(j.info, exit_code=exit_code)

    def checkpoint_dir(self, job_id: str) -> Path:
        return self.jobs[job_id].ckpt_dir

    def criu_obstacle(self, job_id: str) -> str | None:
        return None  # no CRIU in this fake

    def held_image_bytes(self) -> int:
        return 0

    def checkpoint_handler_missing(self, job_id: str) -> str | None:
        j = self.jobs[job_id]
        name = j.info.spec.checkpoint.signal
        why = procs.why_signal_unhandled({j.proc.pid}, getattr(signal, name), name)
        return f"job {job_id} {why}" if why else None

    def begin_checkpoint(self, job_id: str) -> None:
        j = self.jobs[job_id]
        j.holding = True
        os.killpg(j.proc.pid, signal.SIGCONT)
        self._set(j, state="checkpointing")
        sig = getattr(signal, j.info.spec.checkpoint.signal)
        os.killpg(j.proc.pid, sig)

    def wait_exit(self, job_id: str, timeout_s: float) -> int | None:
        try:
            return self.jobs[job_id].proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, job_id: str, grace_s: float) -> None:
        j = self.jobs[job_id]
        j.holding = True
        os.killpg(j.proc.pid, signal.SIGKILL)
        os.killpg(j.proc.pid, signal.SIGCONT)
        j.proc.wait(5)

    def abandon_checkpoint(self, job_id: str, reason: str, paused: bool) -> JobInfo:
        j = self.jobs[job_id]
        j.holding = False
        self._set(j, state="running", reason=reason)
        if paused:
            self.pause(job_id)
        return j.info

    def restart_local(self, job_id: str, reason: str, paused: bool, from_checkpoint: bool,
                      restore_images: Path | None = None) -> JobInfo:  # no CRIU in this fake
        j = self.jobs[job_id]
        assert j.proc is None or j.proc.poll() is not None, "restart_local while the job still runs"
        self._launch(j, resume=from_checkpoint, paused=paused)
        self._set(j, reason=reason)
        return j.info

    def hold_queued(self, job_id: str) -> None:
        self._set(self.jobs[job_id], state="migrating")

    def requeue(self, job_id: str, reason: str) -> JobInfo:
        j = self.jobs[job_id]
        self._set(j, state="queued", reason=reason)
        return j.info

    def update_migration(self, job_id: str, migration: dict, state: str | None = None) -> None:
        j = self.jobs[job_id]
        self._set(j, migration=migration, **({"state": state} if state else {}))

    def finish_migrated(self, job_id: str, migrated_to: str, reason: str) -> JobInfo:
        j = self.jobs[job_id]
        self._set(j, state="migrated", migrated_to=migrated_to, reason=reason, pid=None)
        return j.info

    # -- TargetJobs --
    def admission(self, spec: JobSpec) -> tuple[bool, str]:
        if spec.gpus > 8:
            raise ProtocolError(ErrorCode.INVALID, f"job needs {spec.gpus} GPUs; node {self.node} has 8", "spec.gpus")
        if spec.gpus > self.free_gpus:
            return True, f"no free GPU on {self.node}: the job will queue"
        return False, ""

    def start_resumed(self, spec: JobSpec, checkpoint_dir: Path | None, resumed_from: str, paused: bool,
                      criu_image: bool = False, lineage: list[str] | None = None,
                      first_submitted_s: float = 0.0) -> JobInfo:
        self.arrivals.append({"spec": spec, "lineage": list(lineage or []), "first_submitted_s": first_submitted_s})
        will_queue, _ = self.admission(spec)
        if checkpoint_dir is not None:
            with self.lock:
                self.n += 1
                jid = f"{self.node}.{self.n}"
            own = self.root / "ckpt" / jid
            own.parent.mkdir(parents=True, exist_ok=True)
            os.rename(checkpoint_dir, own)
            j = _Job(info=JobInfo(id=jid, node=self.node, name=spec.name, state="queued", spec=spec, resumed_from=resumed_from), ckpt_dir=own)
            self.jobs[jid] = j
            if not will_queue:
                self._launch(j, resume=True, paused=paused)
            return j.info
        return self.submit(spec, queued=will_queue, resumed_from=resumed_from, paused=paused)

    def find_by_label(self, key: str, value: str) -> JobInfo | None:
        for j in self.jobs.values():
            if j.info.spec.labels.get(key) == value:
                return self.get(j.info.id)
        return None


class DirectClient:
    """Calls a MigrationTarget through the real codec; faults are set on ``link``."""

    def __init__(self, link: Link) -> None:
        self.link = link

    def call(self, req: Any) -> Any:
        link = self.link
        if isinstance(req, Hello):
            # The source's preflight; not counted, so the fault schedules count migration calls.
            if link.down:
                raise StubUnreachable(f"target {link.name} did not answer")
            return HelloReply(node=link.target.node, agentd_version="test", pub_endpoint="", server_time_s=time.time(),
                              capabilities=["migrate", "criu"] if link.target.criu_ok else ["migrate"], role="daemon")
        with link.lock:
            link.calls += 1
            n = link.calls
            if link.down or (link.down_after is not None and n > link.down_after):
                link.down = True
                raise StubUnreachable(f"target {link.name} did not answer")
            if link.flaky and n in link.flaky:
                raise StubUnreachable(f"target {link.name} dropped the connection")
        if link.corrupt_chunk is not None and type(req).__name__ == "MigrateChunk" and req.offset == link.corrupt_chunk:
            data = bytearray(req.data)
            data[len(data) // 2] ^= 0xFF
            req = msgspec.structs.replace(req, data=bytes(data))
        decoded = decode_request(encode(req))
        try:
            reply = link.target.handle(decoded)
        except ProtocolError as exc:
            raise StubRemoteError(int(exc.code), exc.message) from None
        out = decode_reply(encode(reply), type(req).reply)
        if isinstance(out, ErrorReply):
            raise StubRemoteError(out.code, out.message)
        if link.drop_commit_reply and type(req).__name__ == "MigrateCommit":
            link.drop_commit_reply = False
            link.down = True
            raise StubUnreachable("reply lost")
        return out

    def close(self) -> None:
        pass


@dataclass
class Link:
    name: str
    target: MigrationTarget
    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: int = 0
    down: bool = False
    down_after: int | None = None
    flaky: set[int] = field(default_factory=set)
    corrupt_chunk: int | None = None
    drop_commit_reply: bool = False


@dataclass
class Node:
    name: str
    root: Path
    jobs: ProcJobs
    journal: MigrationJournal
    target: MigrationTarget
    source: MigrationSource
    events: list[Event]


class Cluster:
    """Nodes by name; ``links[(src, dst)]`` carries src's requests to dst's target."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.nodes: dict[str, Node] = {}
        self.links: dict[str, Link] = {}

    def add(self, name: str, quota_bytes: int = 1 << 34, free_gpus: int = 8, retry_s: float = 1.0,
            commit_resolve_s: float = 1.0) -> Node:
        root = self.tmp / name
        root.mkdir(parents=True, exist_ok=True)
        jobs = ProcJobs(name, root, free_gpus)
        journal = MigrationJournal(root / "state.db")
        events: list[Event] = []
        target = MigrationTarget(name, jobs, journal, root / "incoming", events.append, quota_bytes=quota_bytes)

        def connect(endpoint: str, key: str):
            link = self.links.setdefault(endpoint, Link(endpoint, self.nodes[endpoint].target))
            return lambda: DirectClient(link)

        source = MigrationSource(name, jobs, journal, connect, root / "outgoing", events.append,
                                 options=SourceOptions(retry_s=retry_s, commit_resolve_s=commit_resolve_s))
        node = Node(name, root, jobs, journal, target, source, events)
        self.nodes[name] = node
        return node

    def link(self, name: str) -> Link:
        return self.links.setdefault(name, Link(name, self.nodes[name].target))

    def alive_total(self) -> int:
        return sum(len(n.jobs.alive()) for n in self.nodes.values())

    def close(self) -> None:
        for n in self.nodes.values():
            n.source.close(5)
            n.jobs.kill_all()
            n.journal.close()


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.close()


def trainer_spec(progress: Path, *, timeout_s: float = 10.0, pad_bytes: int = 0, ignore: str = "",
                 contract: bool = True, gpus: int = 0, handler_delay_s: float = 0.0) -> JobSpec:
    """ckpt_trainer.py; ``ignore``: "1" (SIG_IGN) or "catch" (caught, never checkpoints)."""
    env = {"PROGRESS_FILE": str(progress), "PAD_BYTES": str(pad_bytes), "HANDLER_DELAY_S": str(handler_delay_s)}
    if ignore:
        env["IGNORE_CKPT"] = ignore
    return JobSpec(argv=[sys.executable, str(TRAINER)], name="trainer", env=env, gpus=gpus,
                   checkpoint=CheckpointContract(signal="SIGUSR1", timeout_s=timeout_s) if contract else None)


def steps(progress: Path) -> list[tuple[int, int]]:
    """(step, pid) lines written so far."""
    if not progress.exists():
        return []
    out = []
    for line in progress.read_text().split("\n")[:-1]:  # complete lines: the job may be mid-write
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "step":
            out.append((int(parts[1]), int(parts[2])))
    return out


def remove_node_cgroups(node: str, root: Path = Path("/sys/fs/cgroup")) -> None:
    """Remove the (empty) cgroup subtree a stopped agentd named ``node`` left in each hierarchy."""
    for own in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = own.split(":", 2)
        hierarchy = "unified" if controllers == "" else controllers.replace("name=", "")
        sub = root / hierarchy / path.lstrip("/") / f"agentd-{node}"
        if not sub.is_dir():
            continue
        for d in sorted(sub.rglob("*"), key=lambda p: -len(p.parts)) + [sub]:
            if d.is_dir():
                try:
                    d.rmdir()
                except OSError:
                    pass  # not empty or busy: leave it rather than fight a live process
