"""LiveSource: agentd daemons over ZeroMQ, from one worker thread that owns every socket.

zmq sockets are not thread-safe, so the worker QThread creates, polls and closes all of them:
one :class:`NodeLink` per node for the stream (Clone pattern, staleness, reconnect) and one
:class:`NodeClient` DEALER per node for requests, which it sends without waiting and matches
by request id as replies arrive. Decoded, immutable structs cross to the GUI thread through
queued signals; commands (requests, added or removed nodes) cross the other way through a
plain queue the worker drains every poll. The GUI thread never touches a socket.
"""

from __future__ import annotations

import itertools
import logging
import queue
import time
from dataclasses import dataclass

import msgspec
import zmq
from PySide6.QtCore import QThread, Qt, Signal

from agentd.protocol import ProtocolError, decode_reply, encode
from agentd.protocol.messages import Cancel, ErrorReply, Migrate, Request
from agentd.transport.client import LinkMessage, LinkSnapshot, LinkState, NodeClient, NodeLink
from gui.sources.base import Capabilities, DataSource, NodeAddress, RequestFailure

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.05  # how long the worker waits for sockets before looking at its queue
REQUEST_TIMEOUT_S = 10.0
# A migration replies when the checkpoint has travelled; a cancel waits out the grace period.
SLOW_REQUEST_TIMEOUT_S = {Migrate: 600.0, Cancel: 30.0}
STOP_WAIT_MS = 3000
SEND_WAIT_S = 3.0
LINK_SEND_TIMEOUT_MS = 300
_zombies: list[QThread] = []  # workers that did not stop in time; never destroy a running QThread
_request_ids = itertools.count(1_000_000_000)  # apart from NodeLink's own ids on other sockets


@dataclass
class _Pending:
    token: int
    key: str
    req: Request
    req_id: int
    deadline: float


class _Worker(QThread):
    """The thread that owns the sockets. Talks to the GUI thread only through signals and
    ``commands``."""

    snapshot = Signal(str, object)
    message = Signal(str, object)
    link_state = Signal(str, str, str)
    done = Signal(int, str, object)
    failed = Signal(int, object)
    problem = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.commands: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = False
        self._outbox: list[tuple[int, str, Request, float]] = []

    def request_stop(self) -> None:
        self._stopping = True

    def run(self) -> None:  # noqa: C901 - one loop, read top to bottom
        ctx = zmq.Context()
        # NodeLink sends its hello with a blocking send; with IMMEDIATE set and the daemon
        # down that would block this thread for good. A send timeout turns it into zmq.Again,
        # which we treat as "down, retry later".
        ctx.setsockopt(zmq.SNDTIMEO, LINK_SEND_TIMEOUT_MS)
        links: dict[str, NodeLink] = {}
        clients: dict[str, NodeClient] = {}
        pending: dict[tuple[str, int], _Pending] = {}
        try:
            while not self._stopping:
                self._drain_commands(ctx, links, clients, pending)
                self._flush_outbox(clients, pending)
                poller = zmq.Poller()
                for link in links.values():
                    for s in link.sockets():
                        poller.register(s, zmq.POLLIN)
                for c in clients.values():
                    if c.sock is not None:
                        poller.register(c.sock, zmq.POLLIN)
                try:
                    ready = {s for s, _ in poller.poll(int(POLL_INTERVAL_S * 1000))} if links or clients else set()
                except zmq.ZMQError as exc:
                    self.problem.emit(f"network poll failed: {exc}; retrying")
                    ready = set()
                if not links and not clients:
                    time.sleep(POLL_INTERVAL_S)
                now = time.monotonic()
                for key, link in list(links.items()):
                    try:
                        events = link.handle(ready, now)
                    except Exception as exc:  # one bad node never stops the others
                        log.exception("link %s failed", key)
                        self.problem.emit(f"node {key!r}: stream handling failed: {exc}")
                        continue
                    for ev in events:
                        if isinstance(ev, LinkSnapshot):
                            self.snapshot.emit(key, ev.reply)
                        elif isinstance(ev, LinkMessage):
                            self.message.emit(key, ev.msg)
                        elif isinstance(ev, LinkState):
                            self.link_state.emit(key, ev.state, ev.detail)
                for key, client in clients.items():
                    if client.sock is not None and client.sock in ready:
                        self._read_replies(key, client, pending)
                for pkey, p in list(pending.items()):
                    if now > p.deadline:
                        del pending[pkey]
                        clients[p.key].reset()  # lazy pirate: a late reply must not confuse the next call
                        self.failed.emit(p.token, RequestFailure(
                            p.key, p.req, None,
                            f"node {p.key!r} did not answer {_what(p.req)} within {_timeout(p.req):g} s; "
                            "check that its agentd is running and reachable, then try again"))
        finally:
            for token, key, req, _ in self._outbox:
                self.failed.emit(token, RequestFailure(key, req, None, f"{_what(req)} on {key!r} was not sent: the app is disconnecting"))
            for p in pending.values():
                self.failed.emit(p.token, RequestFailure(p.key, p.req, None, f"{_what(p.req)} on {p.key!r} was abandoned: the app is disconnecting"))
            while True:
                try:
                    cmd = self.commands.get_nowait()
                except queue.Empty:
                    break
                if cmd[0] == "request":
                    _, token, key, req = cmd
                    self.failed.emit(token, RequestFailure(key, req, None, f"{_what(req)} on {key!r} was not sent: the app is disconnecting"))
            for link in links.values():
                link.close()
            for c in clients.values():
                c.close()
            ctx.term()

    def _drain_commands(self, ctx, links, clients, pending) -> None:
        while True:
            try:
                cmd = self.commands.get_nowait()
            except queue.Empty:
                return
            kind = cmd[0]
            if kind == "add":
                addr: NodeAddress = cmd[1]
                if addr.key in links:
                    continue
                try:
                    links[addr.key] = _Link(addr.endpoint, server_key=addr.server_key, ctx=ctx)
                    clients[addr.key] = NodeClient(addr.endpoint, server_key=addr.server_key, ctx=ctx)
                    clients[addr.key]._socket()  # connect now, so the first request finds a connection
                except Exception as exc:
                    self.problem.emit(f"cannot follow node {addr.key!r} at {addr.endpoint}: {exc}")
                    self.link_state.emit(addr.key, "down", str(exc))
            elif kind == "remove":
                key = cmd[1]
                link = links.pop(key, None)
                if link is not None:
                    link.close()
                client = clients.pop(key, None)
                if client is not None:
                    client.close()
                for pkey, p in list(pending.items()):
                    if p.key == key:
                        del pending[pkey]
                        self.failed.emit(p.token, RequestFailure(key, p.req, None, f"node {key!r} was removed before it answered"))
            elif kind == "request":
                _, token, key, req = cmd
                self._outbox.append((token, key, req, time.monotonic() + SEND_WAIT_S))

    def _flush_outbox(self, clients, pending) -> None:
        """Send what can be sent now. With IMMEDIATE set, a node without a live connection
        refuses a message at once (zmq.Again) instead of blocking this thread; such requests
        wait up to SEND_WAIT_S for the connection, then fail with a message."""
        keep = []
        now = time.monotonic()
        for token, key, req, deadline in self._outbox:
            client = clients.get(key)
            if client is None:
                self.failed.emit(token, RequestFailure(key, req, None, f"node {key!r} is not connected; add it first"))
                continue
            req_id = next(_request_ids)
            try:
                body = encode(msgspec.structs.replace(req, id=req_id, actor=req.actor or client.actor))
                client._socket().send(body, zmq.NOBLOCK)
            except zmq.Again:
                if now < deadline:
                    keep.append((token, key, req, deadline))
                else:
                    self.failed.emit(token, RequestFailure(
                        key, req, None, f"node {key!r} is not reachable; {_what(req)} was not sent. Wait until it is live again, then retry"))
                continue
            except zmq.ZMQError as exc:
                client.reset()
                self.failed.emit(token, RequestFailure(key, req, None, f"could not send {_what(req)} to node {key!r}: {exc}"))
                continue
            pending[(key, req_id)] = _Pending(token, key, req, req_id, now + _timeout(req))
        self._outbox = keep

    def _read_replies(self, key: str, client: NodeClient, pending: dict) -> None:
        while client.sock is not None:
            try:
                body = client.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            match = None
            for (k, req_id), p in pending.items():
                if k == key:
                    try:
                        reply = decode_reply(body, type(p.req).reply)
                    except ProtocolError as exc:
                        reply = ErrorReply(id=-1, code=int(exc.code), message=exc.message)
                    if reply.id == req_id:
                        match = (k, req_id), p, reply
                        break
            if match is None:
                continue  # a reply nobody waits for any more
            pkey, p, reply = match
            del pending[pkey]
            if isinstance(reply, ErrorReply):
                self.failed.emit(p.token, RequestFailure(key, p.req, reply.code, reply.message, reply.field))
            else:
                self.done.emit(p.token, key, reply)


class _Link(NodeLink):
    """NodeLink whose (re)connect never blocks: a hello that cannot be sent within the
    context's send timeout marks the link down, and it retries on its own schedule.
    (Workaround until NodeLink._start sends without blocking; reported to the transport owner.)"""

    def _start(self) -> None:
        try:
            super()._start()
        except zmq.Again:
            self._fail(f"no connection to {self.endpoint}", time.monotonic())


def _what(req: Request) -> str:
    name = type(req).__struct_config__.tag
    job = getattr(req, "job", None)
    return f"{name} of job {job!r}" if job else f"the {name!r} request"


def _timeout(req: Request) -> float:
    return SLOW_REQUEST_TIMEOUT_S.get(type(req), REQUEST_TIMEOUT_S)


class LiveSource(DataSource):
    """Follows agentd daemons live. Nodes come from the constructor or :meth:`add_node`."""

    def __init__(self, addresses: list[NodeAddress] = (), label: str = "live", parent=None) -> None:  # type: ignore[assignment]
        super().__init__(parent)
        self._addresses: dict[str, NodeAddress] = {}
        self._label = label
        self._tokens = itertools.count(1)
        self._worker: _Worker | None = None
        self._initial = list(addresses)

    def capabilities(self) -> Capabilities:
        return Capabilities(can_control=True, can_add_nodes=True, can_seek=False, live=True, label=self._label)

    def start(self) -> None:
        if self._worker is not None:
            return
        w = self._worker = _Worker()
        q = Qt.ConnectionType.QueuedConnection
        w.snapshot.connect(self.snapshot.emit, q)
        w.message.connect(self.message.emit, q)
        w.link_state.connect(self._on_link_state, q)
        w.done.connect(self.request_done.emit, q)
        w.failed.connect(self.request_failed.emit, q)
        w.problem.connect(self.problem.emit, q)
        w.start()
        for addr in self._initial:
            self.add_node(addr)
        self._initial = []

    def stop(self) -> None:
        w, self._worker = self._worker, None
        if w is None:
            return
        w.request_stop()
        if not w.wait(STOP_WAIT_MS):
            log.warning("network thread did not stop within %d ms", STOP_WAIT_MS)
            self.problem.emit("the network thread did not stop in time")
            _zombies.append(w)
            return
        w.deleteLater()

    def nodes(self) -> list[str]:
        return list(self._addresses)

    def address(self, key: str) -> NodeAddress | None:
        return self._addresses.get(key)

    def now_s(self) -> float:
        return time.time()

    def add_node(self, address: NodeAddress) -> None:
        if address.key in self._addresses:
            return
        self._addresses[address.key] = address
        self.node_added.emit(address.key)
        self.link_state.emit(address.key, "connecting")
        if self._worker is not None:
            self._worker.commands.put(("add", address))
        else:
            self._initial.append(address)

    def remove_node(self, key: str) -> None:
        if self._addresses.pop(key, None) is None:
            return
        if self._worker is not None:
            self._worker.commands.put(("remove", key))
        self.node_removed.emit(key)

    def request(self, key: str, req: Request) -> int:
        token = next(self._tokens)
        if self._worker is None:
            failure = RequestFailure(key, req, None, f"{_what(req)} on {key!r} was not sent: the app is not connected")
            # Asynchronous even here, as the contract promises.
            from PySide6.QtCore import QTimer
            QTimer.singleShot(0, lambda: self.request_failed.emit(token, failure))
            return token
        self._worker.commands.put(("request", token, key, req))
        return token

    def _on_link_state(self, key: str, state: str, detail: str) -> None:
        if key not in self._addresses:
            return
        self.link_state.emit(key, state)
        if state in ("stale", "down") and detail:
            self.problem.emit(f"node {key!r} is {state}: {detail}")
