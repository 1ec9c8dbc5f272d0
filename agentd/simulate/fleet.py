"""A fleet of SIMULATED nodes speaking the real protocol (``python -m agentd.simulate K``).

Each :class:`SimNode` answers the requests a client of agentd sends (hello, snapshot, jobs,
show, pause, resume, priority, cancel, submit) and publishes what agentd publishes (inventory,
samples with GPUs and job throughput, job changes, events, heartbeats), with ``seq`` and
``epoch`` as agentd keeps them, on its own real sockets (:mod:`agentd.transport.fleet_sockets`).
Nothing runs: jobs are rows whose state changes, GPUs are numbers. Every node says so: its name
(``sim-0001``), hostname ``simulated``, ``gpu_backend`` "simulated", label ``simulated=true``,
agentd version ``simulated`` and the hello capability ``simulated``.

Life in the fleet: jobs start and finish at random, every node's load bursts now and then, a
GPU now and then throttles for a while (a ``gpu_throttle`` alert, message marked simulated,
firing and clearing as agentd's health rules do; ``alert_rate`` per node per tick), and
with ``failures`` a node dies for a while (answers nothing, publishes nothing) and comes back
as a new run (new epoch, seq from 1), as a restarted agentd would.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import msgspec

from agentd.metrics import GpuInfo, NodeInventory, NodeSample
from agentd.metrics.samples import AppMetric, CpuTimes, GpuSample, HostSample
from agentd.protocol import (
    ErrorCode,
    Event,
    JobInfo,
    JobSpec,
    ProtocolError,
    decode_request,
    encode,
    error_reply,
)
from agentd.protocol.alerts import Alert, alert_data
from agentd.protocol.codec import request_id, topic_of
from agentd.protocol.messages import (
    Alerts,
    AlertsReply,
    Cancel,
    EventMsg,
    Heartbeat,
    Hello,
    HelloReply,
    InventoryMsg,
    JobMsg,
    JobReply,
    Jobs,
    JobsReply,
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

GIB = 1 << 30
SIM_VERSION = "simulated"
ROLES = ("viewer", "user", "operator", "admin")


@dataclass
class SimNode:
    """One simulated node; :meth:`handle` and :meth:`tick` return what to send."""

    name: str
    index: int
    ctl: str = ""
    pub: str = ""
    gpus: int = 8
    role: str = "operator"  # what every caller may do here (a simulator has no users)
    rng: random.Random = field(default_factory=random.Random)
    seq: int = 0
    epoch: int = 0
    jobs: dict[str, JobInfo] = field(default_factory=dict)
    next_job: int = 1
    dead_until: float = 0.0
    burst_until: float = 0.0
    cpu: CpuTimes = field(default_factory=CpuTimes)
    tokens: dict[str, float] = field(default_factory=dict)
    last: NodeSample | None = None
    last_publish: float = 0.0
    outbox: list[tuple[bytes, bytes]] = field(default_factory=list)  # (topic, body) to publish
    alert_rate: float = 0.001  # chance per tick that a GPU starts throttling (a simulated alert)
    alerts: dict[int, tuple[Alert, float]] = field(default_factory=dict)  # GPU -> (alert, clears at monotonic)

    def __post_init__(self) -> None:
        self.epoch = time.time_ns() // 1000
        self.inventory = NodeInventory(
            node=self.name, hostname="simulated", cpu_model="simulated CPU", cpu_count=64, mem_total_bytes=512 * GIB,
            gpu_backend="simulated", gpu_status="simulated",
            gpus=[GpuInfo(index=i, name="Simulated GPU", uuid=f"GPU-sim-{self.index:05d}-{i}", mem_total_bytes=80 * GIB,
                          simulated=True) for i in range(self.gpus)],
            agentd_version=SIM_VERSION, labels={"simulated": "true", "rack": f"r{self.index // 32:03d}"},
        )
        for _ in range(self.rng.randint(0, 3)):
            self._start_job(time.time())

    @property
    def dead(self) -> bool:
        return time.monotonic() < self.dead_until

    # ---- requests --------------------------------------------------------------------
    def handle(self, body: bytes) -> bytes | None:
        """The encoded reply to one request (None while the node is dead)."""
        if self.dead:
            return None
        try:
            req = decode_request(body)
            if req.role not in ROLES or ROLES.index(self.role) < ROLES.index(req.role):
                raise ProtocolError(ErrorCode.UNAUTHORIZED, f"simulated node {self.name} gives every caller role "
                                    f"{self.role}; {str(type(req).__struct_config__.tag)!r} needs {req.role}")
            reply = msgspec.structs.replace(self._answer(req), id=req.id)
        except ProtocolError as exc:
            return encode(error_reply(exc, request_id(body)))
        return encode(reply)

    def _job(self, job_id: str) -> JobInfo:
        j = self.jobs.get(job_id if "." in job_id else f"{self.name}.{job_id}")
        if j is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"job {job_id!r} is not on simulated node {self.name!r}", "job")
        return j

    def _answer(self, req: Request) -> Reply:
        now = time.time()
        if isinstance(req, Hello):
            return HelloReply(node=self.name, agentd_version=SIM_VERSION, pub_endpoint=self.pub, server_time_s=now,
                              capabilities=["telemetry", "snapshot", "jobs", "pause", "priority", "cancel", "alerts",
                                            "simulated"],
                              role=self.role, verified_by="simulated", epoch=self.epoch)
        if isinstance(req, Snapshot):
            return SnapshotReply(seq=self.seq, epoch=self.epoch, inventory=self.inventory,
                                 samples=[self.last] if self.last is not None else [], jobs=list(self.jobs.values()),
                                 alerts=[a for a, _ in self.alerts.values()])
        if isinstance(req, Alerts):
            return AlertsReply(alerts=[a for a, _ in self.alerts.values()])
        if isinstance(req, Jobs):
            return JobsReply(jobs=[j for j in self.jobs.values() if not req.active_only or j.state in ("running", "paused")])
        if isinstance(req, Show):
            return JobReply(job=self._job(req.job))
        if isinstance(req, Submit):
            return JobReply(job=self._start_job(now, req.spec, req.actor))
        if isinstance(req, (Pause, Resume, Priority, Cancel)):
            j = self._job(req.job)
            if j.state not in ("running", "paused"):
                raise ProtocolError(ErrorCode.CONFLICT, f"job {j.id} is {j.state}; only running or paused jobs can be changed")
            if isinstance(req, Pause):
                j = msgspec.structs.replace(j, state="paused")
            elif isinstance(req, Resume):
                j = msgspec.structs.replace(j, state="running")
            elif isinstance(req, Priority):
                j = msgspec.structs.replace(j, priority=req.priority)
            else:
                j = msgspec.structs.replace(j, state="cancelled", ended_s=now, exit_code=-15)
            self._changed(j, f"{type(req).__name__.lower()} by {req.actor or 'someone'} (simulated)", req.actor)
            return JobReply(job=j)
        raise ProtocolError(ErrorCode.UNAVAILABLE, f"simulated node {self.name} does not offer "
                            f"{str(type(req).__struct_config__.tag)!r}")

    # ---- the stream ------------------------------------------------------------------
    def _publish(self, msg: StreamMsg) -> None:
        self.seq += 1
        msg = msgspec.structs.replace(msg, seq=self.seq, epoch=self.epoch)
        self.outbox.append((topic_of(msg), encode(msg)))
        self.last_publish = time.monotonic()

    def _start_job(self, now: float, spec: JobSpec | None = None, actor: str = "") -> JobInfo:
        jid = f"{self.name}.{self.next_job}"
        self.next_job += 1
        spec = spec or JobSpec(argv=["simulated-train"], name=f"train-{self.rng.randint(1, 999)}",
                               gpus=self.rng.choice([1, 2, 4, 8]), user="sim")
        free = [g for g in range(self.gpus) if not any(g in j.gpus for j in self.jobs.values() if j.state in ("running", "paused"))]
        job = JobInfo(id=jid, node=self.name, name=spec.name or jid, state="running", spec=spec, owner=spec.user or "sim",
                      gpus=free[: spec.gpus], submitted_s=now, started_s=now)
        self._changed(job, f"job {jid} started (simulated)", actor)
        return job

    def _changed(self, job: JobInfo, message: str, actor: str = "") -> None:
        self.jobs[job.id] = job
        if self.seq or self.last is not None:  # not during __post_init__: the stream starts with run
            self._publish(JobMsg(node=self.name, seq=0, job=job))
            self._publish(EventMsg(node=self.name, seq=0, event=Event(wall_s=time.time(), node=self.name, kind="job.state",
                                                                       message=message, job_id=job.id, actor=actor)))

    def start(self) -> None:
        self._publish(InventoryMsg(node=self.name, seq=0, inventory=self.inventory))

    def _alert(self, alert: Alert, firing: bool) -> None:
        verb = "firing" if firing else "cleared"
        self._publish(EventMsg(node=self.name, seq=0, event=Event(
            wall_s=time.time(), node=self.name, kind="alert", message=f"{alert.severity} {verb}: {alert.message}",
            ok=not firing, data=alert_data(alert, "firing" if firing else "cleared"))))

    def _throttle(self, mono: float, wall: float) -> None:
        """Start and end simulated GPU throttling, each an alert event as agentd sends."""
        for g, (alert, until) in list(self.alerts.items()):
            if mono >= until:
                del self.alerts[g]
                self._alert(alert, firing=False)
        if self.gpus and self.rng.random() < self.alert_rate:
            g = self.rng.randrange(self.gpus)
            if g not in self.alerts:
                alert = Alert(rule="gpu_throttle", node=self.name, subject=f"gpu {g}", severity="warning",
                              message=f"GPU {g} clocks held down: hardware thermal slowdown (simulated)",
                              since_s=wall, evidence={"reasons": "0x40", "simulated": "true"})
                self.alerts[g] = (alert, mono + self.rng.uniform(10, 60))
                self._alert(alert, firing=True)

    def tick(self, mono: float, wall: float, failures: float) -> None:
        """One sample's worth of life: jobs, bursts, failures (called once per interval)."""
        if self.dead:
            return
        if self.dead_until:  # back from the dead: a new run of the daemon
            self.dead_until, self.seq, self.epoch = 0.0, 0, time.time_ns() // 1000
            self.alerts.clear()
            self.start()
        if failures and self.rng.random() < failures:
            self.dead_until = time.monotonic() + self.rng.uniform(5, 20)
            return
        running = [j for j in self.jobs.values() if j.state == "running"]
        if running and self.rng.random() < 0.01:
            j = self.rng.choice(running)
            self._changed(msgspec.structs.replace(j, state="succeeded", ended_s=wall, exit_code=0), f"job {j.id} succeeded (simulated)")
        if len(running) < 3 and self.rng.random() < 0.02:
            self._start_job(wall)
        self._throttle(mono, wall)
        if self.rng.random() < 0.005:
            self.burst_until = mono + self.rng.uniform(3, 15)
        busy = {g for j in self.jobs.values() if j.state == "running" for g in j.gpus}
        burst = mono < self.burst_until
        load = 0.95 if burst else 0.3 + 0.1 * len(busy)
        self.cpu = CpuTimes(user_s=self.cpu.user_s + 64 * min(load, 1.0), idle_s=self.cpu.idle_s + 64 * (1 - min(load, 1.0)))
        gpus = []
        for g in range(self.gpus):
            util = (self.rng.uniform(85, 100) if g in busy else self.rng.uniform(0, 3)) if not burst else 100.0
            gpus.append(GpuSample(index=g, sm_util_pct=util, mem_util_pct=util * 0.6, mem_used_bytes=int(80 * GIB * util / 110),
                                  mem_total_bytes=80 * GIB, power_mw=int(70_000 + 6_300 * util), power_limit_mw=700_000,
                                  temp_c=round(35 + util * 0.45, 1)))
        app = []
        for j in self.jobs.values():
            if j.state == "running":
                self.tokens[j.id] = self.tokens.get(j.id, 0.0) + 1000.0 * max(1, len(j.gpus)) * self.rng.uniform(0.9, 1.1)
            if j.id in self.tokens and j.state in ("running", "paused"):
                app.append(AppMetric(job_id=j.id, name="tokens", value=self.tokens[j.id], counter=True))
        used = int(512 * GIB * (0.2 + 0.5 * load))
        host = HostSample(cpu_total=self.cpu, mem_total_bytes=512 * GIB, mem_used_bytes=used, mem_available_bytes=512 * GIB - used)
        self.last = NodeSample(node=self.name, mono_s=mono, wall_s=wall, host=host, gpus=gpus, app=app)
        self._publish(SampleMsg(node=self.name, seq=0, sample=self.last))

    def heartbeat(self, mono: float) -> None:
        if not self.dead and mono - self.last_publish >= 1.0:
            self._publish(Heartbeat(node=self.name, seq=0, wall_s=time.time()))
