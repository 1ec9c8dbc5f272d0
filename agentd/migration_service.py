"""Wires migration into a running agentd: :class:`MigrationService`, built by agentd/daemon.py.

Part of the daemon program, beside daemon.py: it joins the migration state machine
(agentd.control.migration) to the transport and the JobManager.

Routes ``migrate`` (operator) to :class:`MigrationSource` and the ``migrate_*`` daemon
commands to :class:`MigrationTarget`; the JobManager itself provides what the state
machine needs of it (SourceJobs in agentd/control/migration.py, TargetJobs in migration_target.py). Its timing
options are the daemon's (``migration_*`` in agentd/config.py).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from agentd.config import DaemonConfig
from agentd.control.criu import criu_status
from agentd.control.migration import Connector, MigrationSource, SourceJobs, SourceOptions
from agentd.control.migration_target import MigrationTarget, TargetJobs
from agentd.control.transfer import ClientFactory
from agentd.metrics import NodeSample
from agentd.protocol.errors import ErrorCode, ProtocolError
from agentd.protocol.jobs import Event, JobInfo
from agentd.protocol.messages import Migrate, MigrateReply, Reply, Request
from agentd.protocol.migration import (
    MigrateAbort,
    MigrateChunk,
    MigrateCommit,
    MigrateOffer,
    MigrateStatus,
)
from agentd.store.migration_journal import MigrationJournal
from agentd.transport.client import NodeClient

log = logging.getLogger(__name__)

EXPIRE_EVERY_S = 60.0


class MigrationJobs(SourceJobs, TargetJobs, Protocol):
    """The JobManager as both sides of a migration see it."""


def node_connector(state_dir: Path, call_timeout_s: float) -> Connector:
    """Clients to peer daemons, with this daemon's client keys. This module is daemon wiring
    (the programs layer), so it may use the transport; agentd.control's migration state
    machine only sees these factories."""

    def connect(endpoint: str, server_key: str) -> ClientFactory:
        def factory() -> NodeClient:
            return NodeClient(endpoint, server_key=server_key or None, keys_dir=state_dir / "keys",
                              timeout_s=call_timeout_s, actor="agentd-migration")
        return factory

    return connect


class MigrationService:
    """The migration extension of one daemon: ``handlers()`` are its requests."""

    def __init__(self, node: str, state_dir: Path, jobs: MigrationJobs, emit: Callable[[Event | JobInfo], None],
                 cfg: DaemonConfig, own_endpoints: Callable[[], list[str]], connect: Connector | None = None) -> None:
        self.node = node
        self.own_endpoints = own_endpoints
        self.journal = MigrationJournal(state_dir / "jobs.db")
        self.hooks = jobs
        self.target = MigrationTarget(node, jobs, self.journal, state_dir / "migrations" / "incoming",
                                      emit, quota_bytes=int(cfg.migration_quota), criu=criu_status)
        # "criu": this node restores CRIU images (sources check it before dumping a job).
        self.capabilities = ["migrate", "criu"] if self.target.criu_ok else ["migrate"]
        self.source = MigrationSource(
            node, jobs, self.journal, connect or node_connector(state_dir, cfg.migration_call_timeout_s),
            state_dir / "migrations" / "outgoing", emit, criu=criu_status,
            options=SourceOptions(retry_s=cfg.migration_retry_s, commit_resolve_s=cfg.migration_commit_resolve_s))
        self.target.recover()
        self._last_expiry = time.monotonic()
        self._recovery = threading.Thread(target=self.source.recover, name="migration-recover", daemon=True)
        self._recovery.start()

    def handlers(self) -> dict[type[Request], Callable[[Any, str], Reply]]:
        """``migrate`` from clients, and the ``migrate_*`` commands from peer daemons, as the
        daemon's request handlers (request, caller name) -> reply."""
        table: dict[type[Request], Callable[[Any, str], Reply]] = {Migrate: self._migrate}
        for req in (MigrateOffer, MigrateChunk, MigrateStatus, MigrateCommit, MigrateAbort):
            table[req] = lambda r, actor: self.target.handle(r)
        return table

    def _migrate(self, r: Migrate, actor: str) -> MigrateReply:
        job_id = f"{self.node}.{r.job}" if r.job.isdigit() else r.job
        if not job_id.startswith(self.node + "."):
            raise ProtocolError(ErrorCode.NOT_FOUND, f"job {r.job!r} is not on node {self.node!r}; ask the node that owns it", "job")
        if self._is_own_endpoint(r.target):
            raise ProtocolError(ErrorCode.INVALID, f"cannot migrate job {job_id} to {r.target}: that is node {self.node} "
                                "itself, where the job already is; pick another node", "target")
        rec = self.source.start(job_id, r.target, r.target_key, restart=r.restart, resume=r.resume, actor=actor,
                                regroup=r.regroup)
        return MigrateReply(job=self.hooks.get(job_id), migration_id=rec.id,
                            message=f"migration {rec.id} of {job_id} to {r.target} started ({rec.mode})")

    def _is_own_endpoint(self, target: str) -> bool:
        """Whether ``target`` names one of this daemon's own request sockets (any spelling of a
        local address on our port). The source's preflight also compares the node name the
        target reports, which catches what an address cannot (a NAT, a DNS alias)."""
        own = self.own_endpoints()
        if target in own:
            return True
        host, port = _tcp_host_port(target)
        if port is None:
            return False
        for endpoint in own:
            own_host, own_port = _tcp_host_port(endpoint)
            if own_port != port:
                continue
            if own_host in ("0.0.0.0", "*", "::", "[::]") and _is_local_address(host):
                return True
            if _same_host(own_host, host):
                return True
        return False

    def on_tick(self, sample: NodeSample) -> None:
        now = time.monotonic()
        if now - self._last_expiry >= EXPIRE_EVERY_S:
            self._last_expiry = now
            self.target.expire_stale()

    def close(self) -> None:
        self.source.close()
        self._recovery.join(5)
        self.journal.close()


def _tcp_host_port(endpoint: str) -> tuple[str, int | None]:
    """("host", port) of a ``tcp://host:port`` endpoint; ("", None) for anything else."""
    if not endpoint.startswith("tcp://"):
        return "", None
    host, _, port = endpoint[len("tcp://"):].rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return "", None


def _addresses(host: str) -> set[str]:
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return set()


def _same_host(a: str, b: str) -> bool:
    if a == b:
        return True
    ours, theirs = _addresses(a), _addresses(b)
    loopback = {x for x in ours | theirs if x.startswith("127.") or x == "::1"}
    return bool(ours & theirs) or (bool(ours) and bool(theirs) and ours | theirs == loopback)


def _is_local_address(host: str) -> bool:
    """``host`` resolves to an address of this machine (bind test: only local addresses bind)."""
    for addr in _addresses(host):
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.bind((addr, 0))
            return True
        except OSError:
            continue
    return False

