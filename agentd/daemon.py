"""agentd: wires telemetry -> stream, requests -> control, state -> store.

One loop thread owns the sockets: it receives requests, publishes the stream (samples every
interval, a heartbeat after a quiet second), and answers ``hello``/``snapshot`` itself so a
snapshot's sequence number is exact. Control requests run on a small thread pool because
some wait on the kernel (freeze) or on a job (cancel grace period); their replies and the
events they cause come back to the loop through queues.

Over 500 lines: the one place every part is built, authorised and wired to the loop; the parts
themselves (control, telemetry, health, relay, gangs, radar) live in their own packages.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import logging.handlers
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from agentd import __version__
from agentd.access import AccessPolicy, Caller, owner_of, public_job, without_env_values
from agentd.config import ConfigError, DaemonConfig, build_config, load_config_file
from agentd.control.backend import JobBackend
from agentd.groups.radar_service import RadarService, radar_config
from agentd.health.engine import AlertChange, HealthEngine, alert_event
from agentd.health.rules import RulesError, load_rules
from agentd.metrics import AppMetric, DerivedNode, NodeInventory, NodeSample, derive
from agentd.protocol import ErrorCode, Event, JobInfo, ProtocolError, decode_request, encode, error_reply
from agentd.protocol.codec import request_id
from agentd.protocol.fit import REPLY_BUDGET_BYTES, fit_jobs
from agentd.protocol.gang import GroupAction
from agentd.protocol.messages import (
    Alerts,
    AlertsReply,
    Cancel,
    ErrorReply,
    EventMsg,
    Heartbeat,
    Hello,
    HelloReply,
    InventoryMsg,
    JobMsg,
    JobReply,
    Jobs,
    JobsReply,
    Logs,
    LogsReply,
    Migrate,
    Pause,
    Priority,
    Reply,
    Request,
    Resume,
    SampleMsg,
    Show,
    Snapshot,
    SnapshotReply,
    StreamMsg,
    Submit,
)
from agentd.store.audit import AUDIT_NAME, AuditLog
from agentd.telemetry.cgroup_paths import CgroupRef
from agentd.telemetry.collector import NodeCollector
from agentd.transport.server import BindError, DaemonSockets, Incoming

if TYPE_CHECKING:  # at run time imported where they are built (see _import_parts)
    from agentd.control.manager import JobManager
    from agentd.control.slurm import SlurmBackend
    from agentd.exporter import MetricsExporter
    from agentd.gang_service import GangService
    from agentd.migration_service import MigrationService
    from agentd.relay.service import Relay

log = logging.getLogger("agentd")
HEARTBEAT_S = 1.0
HISTORY_SAMPLES = 300  # what a late joiner may ask for (5 min at 1 Hz; ~1.7 MiB encoded)
RECENT_EVENTS = 500
SNAPSHOT_EVENTS = 200  # recent events a snapshot carries (fewer when they would not fit)
_sample_decoder = msgspec.msgpack.Decoder(NodeSample)
Handler = Callable[[Any, str], Reply]  # (decoded request, caller name) -> reply
# Requests that act on one job: the daemon checks the caller may act on it before the handler runs.
GROUP_ACTIONS = {"pause": "pause", "resume": "resume", "priority": "reprioritise", "cancel": "cancel"}
JOB_ACTIONS: dict[type[Request], str] = {Pause: "pause", Resume: "resume", Priority: "reprioritise",
                                         Cancel: "cancel", Migrate: "migrate"}


def _alert_event(change: AlertChange) -> Event:
    return alert_event(change, time.time())


class StartupError(RuntimeError):
    """agentd cannot start as configured; the message says why and what to change."""


def _import_parts() -> None:
    """Import the parts every daemon builds before anything starts, so a broken module fails
    the start with its ImportError and nothing to undo. Not at the top of this module: they
    import sqlite-utils, which imports numpy whenever it is installed, and main() keeps numpy
    out of this process first (tests/daemon/test_lean_imports.py)."""
    import agentd.control.manager
    import agentd.control.slurm
    import agentd.gang_service
    import agentd.migration_service  # noqa: F401


class Daemon:
    """A running agentd. ``run()`` blocks until :meth:`stop`."""

    def __init__(self, cfg: DaemonConfig) -> None:
        _import_parts()
        self.cfg = cfg
        self.node = cfg.node_name
        self.state_dir = Path(cfg.state_dir)
        self.seq = 0
        # This run of the daemon, in every stream message, hello and snapshot: a client sees a
        # restart as a new epoch (seq starts again at 1) instead of guessing from seq.
        self.epoch = time.time_ns() // 1000
        # History for late joiners, kept encoded: a decoded NodeSample costs ~16 KiB of Python
        # objects, its msgpack ~6 KiB; snapshots decode the few they send.
        self.history: collections.deque[bytes] = collections.deque(maxlen=HISTORY_SAMPLES)
        self.last_sample: NodeSample | None = None
        self.events: collections.deque[Event] = collections.deque(maxlen=RECENT_EVENTS)
        self._outbox: queue.SimpleQueue[Event | JobInfo] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._last_publish = 0.0
        self.handlers: dict[type[Request], Handler] = {}
        self.collector = NodeCollector(self.node, simulate_gpus=cfg.simulate_gpus)
        self.inventory: NodeInventory = msgspec.structs.replace(
            self.collector.inventory(), agentd_version=__version__, labels=cfg.labels
        )
        # Checks that can refuse to start come before anything that needs undoing.
        try:
            self.health = HealthEngine(self.node, load_rules(cfg.health_rules or None))
        except RulesError as exc:
            raise StartupError(str(exc)) from None
        self.slurm = self._make_slurm()
        self.exporter = self._make_exporter()
        local = cfg.local_socket if cfg.local_socket and cfg.local_socket != "off" else ""
        self.sockets = DaemonSockets(cfg.ctl, cfg.pub, self.state_dir, local=f"ipc://{local}" if local else None)
        self.access = AccessPolicy(self.state_dir / "authorized_keys", operators=cfg.operators, admins=cfg.admins)
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="agentd-rpc")
        self.audit = AuditLog(self.state_dir / AUDIT_NAME)
        self.jobs = self._make_job_manager()
        self.relay: Relay | None = None  # with --relay: serves the nodes it follows too (attach_relay)
        self._register_handlers()
        self.migration = self._make_migration()
        self._route_slurm_migrations()
        self.gangs = self._make_gangs()
        self.radar = self._make_radar()

    # ---- wiring ----------------------------------------------------------------------
    # The parts are imported where they are built (see _import_parts for why not at the top).
    def _make_job_manager(self) -> JobManager:
        from agentd.control.manager import JobManager

        mgr = JobManager(
            self.node, self.state_dir, len(self.inventory.gpus),
            on_event=self._outbox.put, on_job=self._outbox.put,
            cpu_count=self.inventory.cpu_count, mem_total_bytes=self.inventory.mem_total_bytes,
            retention_s=float(self.cfg.job_retention), max_ended_jobs=self.cfg.max_ended_jobs,
        )
        mgr.start()
        return mgr

    def _make_slurm(self) -> SlurmBackend | None:
        from agentd.control.slurm import SlurmUnavailable, backend_for

        try:
            return backend_for(self.node, self.cfg.slurm)
        except SlurmUnavailable as exc:
            raise StartupError(str(exc)) from None

    def _make_exporter(self) -> MetricsExporter | None:
        if not self.cfg.metrics_listen:
            return None
        from agentd.exporter import MetricsExporter

        try:
            exp = MetricsExporter(self.node, self.cfg.metrics_listen, simulated_gpus=self.inventory.gpu_backend == "simulated",
                                  ended_retention_s=float(self.cfg.metrics_job_retention))
            exp.start()
        except (ValueError, OSError) as exc:
            raise StartupError(f"--metrics-listen {self.cfg.metrics_listen}: {exc}") from None
        return exp

    def _make_migration(self) -> MigrationService | None:
        """Migration registers its requests; None (and ``migrate`` answers UNAVAILABLE) when
        it cannot start here, e.g. its journal on a full or damaged state disk."""
        from agentd.migration_service import MigrationService

        try:
            service = MigrationService(self.node, self.state_dir, self.jobs, self.emit, self.cfg,
                                       own_endpoints=lambda: list(self.sockets.endpoints.values()))
        except Exception:  # runtime trouble only: an ImportError failed the start in _import_parts
            log.exception("migration could not start; this node runs without it")
            return None
        for req_type, handler in service.handlers().items():
            self.register(req_type, handler)
        return service

    def _make_gangs(self) -> GangService:
        """Gang jobs: the group verbs and the leader of the groups whose rank 0 runs here."""
        from agentd.gang_service import GangService

        service = GangService(self.node, self.state_dir, self.jobs)
        for req_type, handler in service.handlers().items():
            self.register(req_type, handler)
        return service

    def _make_radar(self) -> RadarService:
        """The live straggler and hang radar of the groups whose rank 0 runs here (docs/groups.md)."""
        try:
            config = radar_config(self.cfg.radar)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        radar = RadarService(self.node, self.state_dir, self.sockets.ctl_endpoint, self.emit,
                             lambda j: self._owner(j).get(self._local(j)), config, own_key=self.sockets.server_key)
        for req_type, handler in radar.handlers().items():
            self.register(req_type, handler)
        return radar

    def register(self, req_type: type[Request], handler: Handler) -> None:
        self.handlers[req_type] = handler

    def _register_handlers(self) -> None:
        self.register(Jobs, lambda r, actor: JobsReply(jobs=self.all_jobs(active_only=r.active_only)))
        self.register(Show, lambda r, actor: JobReply(job=self._owner(r.job).get(self._local(r.job))))
        self.register(Submit, lambda r, actor: JobReply(job=self._jobs().submit(r.spec, actor=actor)))
        self.register(Pause, lambda r, actor: JobReply(job=self._owner(r.job).pause(self._local(r.job), actor=actor)))
        self.register(Resume, lambda r, actor: JobReply(job=self._owner(r.job).resume(self._local(r.job), actor=actor)))
        self.register(Priority, lambda r, actor: JobReply(job=self._owner(r.job).set_priority(self._local(r.job), r.priority, actor=actor)))
        self.register(Cancel, lambda r, actor: JobReply(job=self._owner(r.job).cancel(self._local(r.job), grace_s=r.grace_s, actor=actor)))
        self.register(Logs, self._logs)
        self.register(Alerts, lambda r, actor: AlertsReply(alerts=self.health.active() + self.radar.active()))

    def _route_slurm_migrations(self) -> None:
        """Slurm jobs migrate through Slurm (requeue); ours through the migration service."""
        ours = self.handlers.get(Migrate)

        def migrate(r: Migrate, actor: str) -> Reply:
            if self.slurm is not None and self.slurm.owns(self._local(r.job)):
                return JobReply(job=self.slurm.migrate(self._local(r.job), target=r.target, resume=r.resume, actor=actor),
                                message="Slurm requeues the job: it restarts from its beginning (or its own checkpoint)")
            if ours is None:
                raise ProtocolError(ErrorCode.UNAVAILABLE, f"node {self.node!r} does not offer migration")
            return ours(r, actor)

        self.register(Migrate, migrate)

    def all_jobs(self, active_only: bool = False) -> list[JobInfo]:
        jobs = self.jobs.jobs(active_only=active_only)
        if self.slurm is not None:
            jobs = jobs + self.slurm.jobs(active_only=active_only)
        return jobs

    def _owner(self, job_id: str) -> JobBackend:
        """The backend that owns a job: Slurm for its jobs, the local JobManager otherwise."""
        if self.slurm is not None and self.slurm.owns(self._local(job_id)):
            return self.slurm
        return self._jobs()

    def _jobs(self) -> JobManager:
        return self.jobs

    def _local(self, job_id: str) -> str:
        """Accept ``node.N`` for this node, or a bare ``N`` as shorthand; jobs submitted under an
        earlier node name keep that name's prefix."""
        known = self.jobs.resolve(job_id)
        if known is not None:
            return known
        if job_id.isdigit():
            return f"{self.node}.{job_id}"
        if not job_id.startswith(self.node + "."):
            raise ProtocolError(ErrorCode.NOT_FOUND, f"job {job_id!r} is not on node {self.node!r}; ask the node that owns it", "job")
        return job_id

    def _logs(self, r: Logs, actor: str) -> LogsReply:
        data, offset, size, eof = self._jobs().read_log(self._local(r.job), r.stream, r.offset, min(r.max_bytes, 1 << 20))
        return LogsReply(data=data, offset=offset, size=size, eof=eof)

    # ---- requests --------------------------------------------------------------------
    def _dispatch(self, inc: Incoming) -> None:
        try:
            req = decode_request(inc.body)
        except ProtocolError as exc:
            self._audit_refusal(self.access.caller(inc.peer), "?", "", exc)
            self.sockets.send_reply(inc.identity, error_reply(exc, request_id(inc.body)))
            return
        caller = self.access.caller(inc.peer, req.actor)
        cmd = str(type(req).__struct_config__.tag)
        try:
            hint = f"connect with `agentctl --node {self.sockets.local_endpoint}`" if self.sockets.local_endpoint else ""
            self.access.require_role(caller, cmd, req.role, hint)
        except ProtocolError as exc:
            self._audit_refusal(caller, cmd, getattr(req, "job", ""), exc)
            self.sockets.send_reply(inc.identity, error_reply(exc, req.id))
            return
        if isinstance(req, Hello):
            self.sockets.send_reply(inc.identity, self._hello(req, caller))
        elif isinstance(req, Snapshot):
            self.sockets.send_reply(inc.identity, self._snapshot(req, caller))
        else:
            self.pool.submit(self._run_handler, inc.identity, req, caller)

    def _run_handler(self, identity: bytes, req: Request, caller: Caller) -> None:
        cmd = str(type(req).__struct_config__.tag)
        handler = self.handlers.get(type(req))
        obj = getattr(req, "job", "") or ""
        reply: Reply | ErrorReply
        try:
            routed = self.relay.route(req, caller) if self.relay is not None else None
            if routed is not None:  # a relay answers for the nodes behind it
                reply = routed
            elif handler is None:
                raise ProtocolError(ErrorCode.UNAVAILABLE, f"node {self.node!r} does not offer {cmd!r}")
            else:
                req = self._authorize(req, caller)
                reply = handler(req, caller.name)
            if isinstance(reply, JobsReply):  # however a handler built it, it fits the frame limit
                jobs, omitted = fit_jobs(reply.jobs)
                reply = msgspec.structs.replace(reply, jobs=jobs, omitted=reply.omitted + omitted)
            reply = msgspec.structs.replace(reply, id=req.id)
            reply = self._private_view(reply, caller)
            if req.role != "viewer":
                job = getattr(reply, "job", None)
                self._audit(caller, cmd, obj or (job.id if job is not None else ""), "ok")
        except ProtocolError as exc:
            self._audit_refusal(caller, cmd, obj, exc)
            reply = error_reply(exc, req.id)
        except Exception as exc:  # never let one request take the daemon down
            log.exception("%s request failed", cmd)
            self._audit(caller, cmd, obj, f"failed: {exc}")
            reply = error_reply(ProtocolError(ErrorCode.FAILED, f"{cmd} failed inside agentd: {exc}; see {self.state_dir}/agentd.log"), req.id)
        self.sockets.reply_later(identity, reply)

    def _authorize(self, req: Request, caller: Caller) -> Request:
        """Check what needs the object (whose job is it?); returns the request to run."""
        if isinstance(req, Submit):
            if req.node and req.node != self.node:  # a relay routed it already; this is no relay
                raise ProtocolError(ErrorCode.NOT_FOUND, f"node {self.node!r} runs jobs only itself and relays to no "
                                    f"{req.node!r}; submit to that node (or its relay) instead", "node")
            user = self.access.run_as(caller, req.spec.user)
            self._require_priority(caller, req.spec.priority)
            return msgspec.structs.replace(req, spec=msgspec.structs.replace(req.spec, user=user))
        if isinstance(req, Priority):
            self._require_priority(caller, req.priority)
        if isinstance(req, GroupAction):  # every rank here must be the caller's to control
            if req.action == "priority":
                self._require_priority(caller, req.priority)
            for job in self.jobs.group_members(req.group):
                self.access.require_control(caller, GROUP_ACTIONS[req.action], job)
        action = JOB_ACTIONS.get(type(req))
        if action is not None:
            self.access.require_control(caller, action, self._owner(req.job).get(self._local(req.job)))  # type: ignore[attr-defined]
        elif isinstance(req, Logs):
            job = self._owner(req.job).get(self._local(req.job))
            if not caller.may_see_private(owner_of(job)):
                raise ProtocolError(ErrorCode.FORBIDDEN, f"the logs of job {job.id} are private to {owner_of(job) or 'its owner'}, "
                                    f"operators and admins; {caller.name} (role {caller.role}) may not read them", "job")
            if caller.user != owner_of(job):  # reads of another user's logs leave a trace
                self._audit(caller, "logs", job.id, "ok (another user's logs)")
        return req

    @staticmethod
    def _require_priority(caller: Caller, priority: int) -> None:
        # As Slurm lets users only lower their jobs' priority: otherwise everyone's jobs are +10.
        if priority > 0 and not caller.at_least("operator"):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"priority {priority}: {caller.name} (role {caller.role}) may set "
                                "priorities up to 0; raising a job above 0 needs an operator", "priority")

    def _private_view(self, reply: Reply, caller: Caller) -> Reply:
        """Strip what this caller may not see: env values always in lists, and whole argv and
        env of other users' jobs (the owner, operators and admins see them in ``show``)."""
        if isinstance(reply, JobsReply):
            return msgspec.structs.replace(reply, jobs=[self._job_view(j, caller) for j in reply.jobs])
        if isinstance(reply, JobReply):
            full = caller.may_see_private(owner_of(reply.job))
            return msgspec.structs.replace(reply, job=reply.job if full else public_job(reply.job))
        return reply

    @staticmethod
    def _job_view(job: JobInfo, caller: Caller) -> JobInfo:
        return without_env_values(job) if caller.may_see_private(owner_of(job)) else public_job(job)

    def _audit(self, caller: Caller, cmd: str, obj: str, result: str) -> None:
        entry = {"wall_s": time.time(), "node": self.node, "caller": caller.name, "user": caller.user or "",
                 "uid": caller.uid, "role": caller.role, "verified_by": caller.verified_by or "unverified",
                 "note": caller.note, "cmd": cmd, "object": obj, "result": result}
        self.audit.write(entry)  # never raises: a full disk must not stop the daemon

    def _audit_refusal(self, caller: Caller, cmd: str, obj: str, exc: ProtocolError) -> None:
        if exc.code in (ErrorCode.UNAUTHORIZED, ErrorCode.FORBIDDEN) or cmd not in ("hello", "snapshot", "jobs", "show"):
            self._audit(caller, cmd, obj, f"refused {int(exc.code)}: {exc.message}")

    def _hello(self, req: Hello, caller: Caller) -> HelloReply:
        caps = ["telemetry", "snapshot", "jobs", "pause", "priority", "cancel", "logs", "alerts"]
        if self.slurm is not None:
            caps.append("slurm")
        if self.migration is not None:
            caps += self.migration.capabilities
        if self.exporter is not None:
            caps.append("prometheus")
        if self.relay is not None:
            caps += self.relay.capabilities
        return HelloReply(
            id=req.id, node=self.node, agentd_version=__version__, pub_endpoint=self.sockets.pub_endpoint,
            capabilities=caps, server_time_s=time.time(), role=caller.role, user=caller.user or "",
            verified_by=caller.verified_by, local_endpoint=self.sockets.local_endpoint,
            problems=list(self.jobs.problems), epoch=self.epoch,
        )

    def _snapshot(self, req: Snapshot, caller: Caller) -> SnapshotReply:
        self._flush_outbox()  # so the snapshot includes everything published up to seq
        n = max(0, min(req.history, HISTORY_SAMPLES))
        encoded = list(self.history)[-n:] if n else []
        events = list(self.events)[-SNAPSHOT_EVENTS:]
        # Samples and events take at most half the frame; jobs fill the rest (fit_jobs).
        half = REPLY_BUDGET_BYTES // 2
        while encoded and sum(map(len, encoded)) > half:
            encoded = encoded[len(encoded) // 2 + 1:]
        base = SnapshotReply(id=req.id, seq=self.seq, epoch=self.epoch, inventory=self.inventory, events=events,
                             alerts=self.health.active() + self.radar.active())
        while events and len(encode(base)) + sum(map(len, encoded)) > half:
            events = events[len(events) // 2 + 1:]
            base = msgspec.structs.replace(base, events=events)
        samples = [_sample_decoder.decode(b) for b in encoded]
        visible = [self._job_view(j, caller) for j in self.all_jobs()]
        jobs, omitted = fit_jobs(visible, REPLY_BUDGET_BYTES - len(encode(base)) - sum(map(len, encoded)))
        return msgspec.structs.replace(base, samples=samples, jobs=jobs, jobs_omitted=omitted)

    # ---- stream ----------------------------------------------------------------------
    def publish(self, make: Callable[[int], StreamMsg]) -> None:
        self.seq += 1
        self.sockets.publish(msgspec.structs.replace(make(self.seq), epoch=self.epoch))
        self._last_publish = time.monotonic()

    def _flush_outbox(self) -> None:
        while True:
            try:
                item = self._outbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Event):
                self.events.append(item)
                if item.kind in ("action", "migration") and item.actor:
                    self.audit.write(msgspec.to_builtins(item))
                self._publish_event(item)
            else:
                if self.exporter is not None:
                    self.exporter.job_changed(item)
                # The stream reaches every viewer: no env values, no argv beyond the program.
                self._publish_job(public_job(item))

    def _publish_event(self, event: Event) -> None:
        self.publish(lambda s: EventMsg(node=self.node, seq=s, event=event))

    def _publish_job(self, job: JobInfo) -> None:
        self.publish(lambda s: JobMsg(node=self.node, seq=s, job=job))

    def emit(self, item: Event | JobInfo) -> None:
        """Thread-safe: publish an event or job update from any thread."""
        self._outbox.put(item)
        self.sockets.wake()

    def tick(self) -> None:
        probes: dict[str, tuple[CgroupRef | None, list[int]]] = {}
        app: list[AppMetric] = []
        try:
            self.jobs.tick()
            probes = self.jobs.probes()
            app = self.jobs.app_metrics()
        except Exception:
            log.exception("job bookkeeping failed this tick")
        if self.slurm is not None:
            try:
                for job in self.slurm.poll_changes():
                    self._outbox.put(job)
                probes = {**probes, **self.slurm.probes()}
            except Exception:
                log.exception("Slurm poll failed this tick")
        sim = self.collector.simulated_gpus
        if sim is not None:
            holders = self.jobs.gpu_assignments()
            running = self.jobs.running_gpus()  # not jobs(): a JobInfo per job per tick for a set of ints
            for g in self.inventory.gpus:
                sim.set_load(g.index, g.index in running, holders.get(g.index, []))
        sample = self.collector.sample(jobs=probes, app=app)
        previous, self.last_sample = self.last_sample, sample
        self.history.append(encode(sample))
        self.publish(lambda s: SampleMsg(node=self.node, seq=s, sample=sample))
        derived = derive(sample, previous)
        jobs = self.all_jobs(active_only=True)
        if self.exporter is not None:
            self.exporter.update(sample, derived, jobs, names_refused=self.jobs.metric_refusals)
        self._observe_health(derived, jobs)
        if self.migration is not None:
            self.migration.on_tick(sample)
        if self.relay is not None:
            self.relay.on_tick(sample)
        self.radar.on_tick(sample, jobs)

    def _observe_health(self, derived: DerivedNode, jobs: list[JobInfo]) -> None:
        """Run the health rules on this sample; each alert firing or clearing is an event."""
        try:
            changes = self.health.observe(derived, jobs, derived.wall_s)
        except Exception:  # a rule's bug must not stop the samples
            log.exception("health rules failed this tick")
            return
        for change in changes:
            self.emit(_alert_event(change))

    # ---- loop ------------------------------------------------------------------------
    def run(self) -> int:
        log.info("agentd %s: node %s, requests on %s, stream on %s%s", __version__, self.node,
                 self.sockets.ctl_endpoint, self.sockets.pub_endpoint, " (CURVE)" if self.sockets.secure else "")
        self.publish(lambda s: InventoryMsg(node=self.node, seq=s, inventory=self.inventory))
        self.gangs.start()
        interval = self.cfg.interval
        next_tick = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            wait = max(0.0, min(next_tick, self._last_publish + HEARTBEAT_S) - now)
            for inc in self.sockets.poll(int(wait * 1000)):
                try:
                    self._dispatch(inc)
                except Exception:  # nothing a client sends may stop the loop
                    log.exception("request dropped")
            self.sockets.flush_replies()
            self._flush_outbox()
            if self.relay is not None:
                self.relay.flush()
            now = time.monotonic()
            if now >= next_tick:
                try:
                    self.tick()
                except Exception:
                    log.exception("telemetry tick failed")
                next_tick += interval
                if next_tick < now:  # fell behind (suspended host): don't burst
                    next_tick = now + interval
            if now - self._last_publish >= HEARTBEAT_S:
                self.publish(lambda s: Heartbeat(node=self.node, seq=s, wall_s=time.time()))
        return 0

    def stop(self) -> None:
        self._stop.set()
        self.sockets.wake()

    def close(self) -> None:
        self.jobs.stop_waiting()  # a cancel waiting out a grace period must not delay SIGTERM
        self.gangs.close()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.sockets.flush_replies()
        self.radar.close()
        if self.migration is not None:
            self.migration.close()
        if self.relay is not None:
            self.relay.close()
        if self.slurm is not None:
            self.slurm.close()
        self.jobs.close()  # never kills jobs: a restarted agentd re-adopts them
        if self.exporter is not None:
            self.exporter.stop()
        self.collector.close()
        self.sockets.close()
        self.audit.close()


def _configure_logging(state_dir: Path, level: str) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(fmt)
    root.addHandler(err)
    try:
        fileh = _QuietRotatingFileHandler(state_dir / "agentd.log", maxBytes=5 << 20, backupCount=2)
    except OSError as exc:
        log.error("cannot open %s (%s); logging to stderr only", state_dir / "agentd.log", exc)
        return
    fileh.setFormatter(fmt)
    root.addHandler(fileh)


class _QuietRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """The log file on a full state disk: records that cannot be written are counted, and said
    once on stderr, instead of a traceback per record."""

    dropped = 0

    def handleError(self, record: logging.LogRecord) -> None:
        self.dropped += 1
        if self.dropped == 1:
            print(f"agentd: cannot write {self.baseFilename} ({sys.exc_info()[1]}); log records are dropped "
                  "and counted until it works", file=sys.stderr)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="agentd", description="Fleetdeck node daemon: telemetry and job control over ZeroMQ.")
    p.add_argument("--config", type=Path, help="TOML config file (see packaging/agentd.toml.example)")
    p.add_argument("--state-dir", help="where keys, job state and logs live")
    p.add_argument("--ctl", help="request endpoint (default tcp://127.0.0.1:7710)")
    p.add_argument("--pub", help="stream endpoint (default tcp://127.0.0.1:7711)")
    p.add_argument("--node-name", help="name of this node (default: the host name)")
    p.add_argument("--interval", type=float, help="seconds between samples, 0.1 to 60 (default 1)")
    p.add_argument("--simulate-gpus", type=int, metavar="N", help="simulate N GPUs (demos, tests); marked simulated")
    p.add_argument("--metrics-listen", metavar="HOST:PORT", help="serve Prometheus /metrics there (off by default)")
    p.add_argument("--metrics-job-retention", metavar="DURATION",
                   help="keep an ended job's state in /metrics this long, e.g. 600, 10m (default 10m)")
    p.add_argument("--slurm", choices=["auto", "on", "off"], help="control Slurm jobs on this node (default auto)")
    p.add_argument("--migration-quota", metavar="SIZE",
                   help="largest total of incoming migration checkpoints this node holds at once, e.g. 64G (default 64G)")
    p.add_argument("--job-retention", metavar="DURATION",
                   help="forget ended jobs (table, store, logs) after this long, e.g. 3600, 90m, 24h, 7d (default 24h)")
    p.add_argument("--health-rules", metavar="FILE", help="TOML file overriding the health rules' defaults (docs/health.md)")
    p.add_argument("--relay", metavar="CLUSTER.toml", type=Path,
                   help="also follow every node of this cluster file and serve them all here (docs/relays.md)")
    p.add_argument("--simulate-nodes", type=int, metavar="K",
                   help="run a fleet simulator of K SIMULATED nodes instead (python -m agentd.simulate --help)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="node label (repeatable)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--version", action="version", version=f"agentd {__version__}")
    return p.parse_args(argv)


def _keep_numpy_out() -> None:
    """agentd never uses numpy or pandas, but sqlite-utils imports them whenever they are
    installed (the app's extra brings numpy): 11 MiB of RSS for nothing on a node whose
    budget is 40 MiB. Make those imports fail in this process; sqlite-utils copes."""
    for name in ("numpy", "pandas"):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    _keep_numpy_out()
    # Private by default: the state dir holds keys, every job's env and the audit log. What
    # users must reach gets its mode explicitly (agentd.control.statedir); jobs get umask 022.
    os.umask(0o077)
    args = parse_args(argv)
    if args.simulate_nodes is not None:
        from agentd.simulate.__main__ import main as simulate_main

        return simulate_main([str(args.simulate_nodes), *(["--interval", str(args.interval)] if args.interval else [])])
    try:
        file_values = load_config_file(args.config) if args.config else {}
        labels = dict(file_values.get("labels", {}))
        for item in args.label:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"--label {item!r} is not KEY=VALUE")
            labels[key] = value
        cfg = build_config(file_values, {
            "state_dir": args.state_dir, "ctl": args.ctl, "pub": args.pub, "node_name": args.node_name,
            "interval": args.interval, "simulate_gpus": args.simulate_gpus, "metrics_listen": args.metrics_listen,
            "slurm": args.slurm, "log_level": args.log_level, "labels": labels or None,
            "migration_quota": args.migration_quota, "job_retention": args.job_retention,
            "metrics_job_retention": args.metrics_job_retention, "health_rules": args.health_rules,
        })
        state_dir = Path(cfg.state_dir)
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            probe = state_dir / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            # Imported here, after _keep_numpy_out(): sqlite-utils pulls numpy in otherwise.
            from agentd.store.jobstore import is_disk_full

            if not is_disk_full(exc):
                raise ConfigError(f"state dir {state_dir} is not writable ({exc.strerror}); pass --state-dir DIR") from None
            # A full disk is not a configuration error: start degraded (telemetry, control of the
            # jobs already running) rather than crash-looping under systemd.
            print(f"agentd: state dir {state_dir} is full ({exc.strerror}); starting degraded: telemetry and "
                  "existing jobs work, new jobs are refused until space is freed", file=sys.stderr)
            with contextlib.suppress(OSError):
                (state_dir / ".write-test").unlink()
    except ConfigError as exc:
        print(f"agentd: {exc}", file=sys.stderr)
        return 2
    _configure_logging(state_dir, cfg.log_level)
    try:
        daemon = Daemon(cfg)
    except (BindError, StartupError) as exc:
        print(f"agentd: {exc}", file=sys.stderr)
        return 2
    except (ValueError, PermissionError) as exc:
        print(f"agentd: {exc}", file=sys.stderr)
        return 2
    if args.relay is not None:
        from agentd.clusterfile import ClusterFileError
        from agentd.relay import attach_relay

        try:
            daemon.relay = attach_relay(daemon, args.relay, keys_dir=state_dir / "keys")
        except ClusterFileError as exc:
            print(f"agentd: --relay: {exc}", file=sys.stderr)
            daemon.close()
            return 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: daemon.stop())
    try:
        return daemon.run()
    finally:
        daemon.close()
        log.info("agentd stopped")


if __name__ == "__main__":
    sys.exit(main())
