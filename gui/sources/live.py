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
from agentd.store.recording import Recorder, RecordingError
from agentd.transport.client import LinkMessage, LinkSnapshot, LinkState, NodeClient, NodeLink
from gui.sources.base import Capabilities, DataSource, NodeAddress, RequestFailure

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.05  # how long the worker waits for sockets before looking at its queue
REQUEST_TIMEOUT_S = 10.0
# A migration replies when the checkpoint has travelled; a cancel waits out the grace period.
SLOW_REQUEST_TIMEOUT_S = {Migrate: 600.0, Cancel: 30.0}
STOP_WAIT_MS = 3000
SEND_WAIT_S = 3.0
RECORDING_STATUS_EVERY_S = 1.0  # how often the recording indicator hears duration and size
_zombies: list[QThread] = []  # workers that did not stop in time; never destroy a running QThread
_request_ids = itertools.count(1_000_000_000)  # apart from NodeLink's own ids on other sockets


@dataclass(frozen=True)
class RecordingStatus:
    """What the recording indicator shows; sent from the network thread about once a second.

    ``error`` is a readable message (RecordingError's) when recording stopped because the file
    could not be written; empty otherwise."""

    active: bool
    path: str
    duration_s: float = 0.0
    size_bytes: int = 0
    samples: int = 0
    error: str = ""


class _Recording:
    """The recorder plus what the worker needs around it. Lives in (and is touched only by)
    the network thread: sqlite connections and the recorder are not thread-safe."""

    def __init__(self, path: str, title: str, notes: str, links: dict[str, NodeLink], endpoints: dict[str, str]) -> None:
        self.recorder = Recorder(path, title=title, notes=notes)
        self.path = path
        self.started = time.monotonic()
        self.reported = 0.0
        # A node's messages are recorded from its next snapshot on, so a replay always finds
        # the inventory and job table the messages build on.
        self.waiting: set[str] = set()
        for key, link in links.items():
            self.recorder.add_node(key, endpoint=endpoints.get(key, link.endpoint))
            self.recorder.link_state(key, link.state)
            self.waiting.add(key)
            # A fresh snapshot, so the recording starts with the inventory and the job table.
            link.resync()

    def status(self, active: bool = True, error: str = "") -> RecordingStatus:
        return RecordingStatus(active, self.path, time.monotonic() - self.started, self.recorder.size_bytes(),
                               self.recorder.samples_written, error)


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
    recording = Signal(object)  # RecordingStatus

    def __init__(self) -> None:
        super().__init__()
        self.commands: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = False
        self._outbox: list[tuple[int, str, Request, float]] = []
        self._rec: _Recording | None = None
        self._endpoints: dict[str, str] = {}

    def request_stop(self) -> None:
        self._stopping = True

    def run(self) -> None:  # noqa: C901 - one loop, read top to bottom
        ctx = zmq.Context()
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
                        if self._rec is not None:
                            self._record(key, ev)
                if self._rec is not None:
                    self._recording_tick()
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
            if self._rec is not None:
                self._stop_recording(None, None)
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
                self._endpoints[addr.key] = addr.endpoint
                try:
                    links[addr.key] = NodeLink(addr.endpoint, server_key=addr.server_key, ctx=ctx)
                    if self._rec is not None:
                        self._rec.waiting.add(addr.key)
                        self._guard(lambda: self._rec.recorder.add_node(addr.key, endpoint=addr.endpoint))
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
            elif kind == "record":
                _, path, title, notes = cmd
                if self._rec is not None:
                    self.recording.emit(self._rec.status(error=f"already recording to {self._rec.path}; stop that first"))
                    continue
                try:
                    self._rec = _Recording(path, title, notes, links, self._endpoints)
                except RecordingError as exc:
                    self._rec = None
                    self.recording.emit(RecordingStatus(False, path, error=str(exc)))
                    continue
                self.recording.emit(self._rec.status())
            elif kind == "record_stop":
                _, title, notes = cmd
                if self._rec is not None:
                    self._stop_recording(title, notes)
            elif kind == "record_meta":
                _, path, title, notes = cmd
                self._set_meta(path, title, notes)

    # ---- recording (all of it on this thread: the GUI thread never touches the disk) ----

    def _guard(self, fn) -> None:
        """Run one recorder call; a RecordingError (disk full, file gone) ends the recording
        with its message instead of ending this thread."""
        try:
            fn()
        except RecordingError as exc:
            self._abort_recording(str(exc))

    def _record(self, key: str, ev) -> None:
        rec = self._rec
        assert rec is not None
        if isinstance(ev, LinkSnapshot):
            rec.waiting.discard(key)
            self._guard(lambda: rec.recorder.feed(key, ev.reply))
        elif isinstance(ev, LinkMessage):
            if key not in rec.waiting:
                self._guard(lambda: rec.recorder.feed(key, ev.msg))
        elif isinstance(ev, LinkState):
            self._guard(lambda: rec.recorder.link_state(key, ev.state, ev.detail))

    def _recording_tick(self) -> None:
        rec = self._rec
        if rec is None:
            return
        self._guard(rec.recorder.maybe_flush)
        now = time.monotonic()
        if self._rec is not None and now - rec.reported >= RECORDING_STATUS_EVERY_S:
            rec.reported = now
            self.recording.emit(rec.status())

    def _abort_recording(self, message: str) -> None:
        rec, self._rec = self._rec, None
        if rec is None:
            return
        try:
            rec.recorder.close()  # a failed recorder is closed already; this is then a no-op
        except RecordingError:
            pass
        self.recording.emit(rec.status(active=False, error=message))

    def _stop_recording(self, title: str | None, notes: str | None) -> None:
        rec, self._rec = self._rec, None
        assert rec is not None
        error = ""
        try:
            rec.recorder.close()
        except RecordingError as exc:
            error = str(exc)
        if not error and (title is not None or notes is not None):
            error = self._set_meta(rec.path, title, notes, report=False)
        self.recording.emit(rec.status(active=False, error=error))

    def _set_meta(self, path: str, title: str | None, notes: str | None, report: bool = True) -> str:
        from agentd.store.recording import RecordingReader
        try:
            with RecordingReader(path) as r:
                r.set_meta(title=title, notes=notes)
        except RecordingError as exc:
            if report:
                self.problem.emit(f"could not save the recording's title and notes: {exc}")
            return str(exc)
        return ""

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


def _what(req: Request) -> str:
    name = type(req).__struct_config__.tag
    job = getattr(req, "job", None)
    return f"{name} of job {job!r}" if job else f"the {name!r} request"


def _timeout(req: Request) -> float:
    return SLOW_REQUEST_TIMEOUT_S.get(type(req), REQUEST_TIMEOUT_S)


class LiveSource(DataSource):
    """Follows agentd daemons live. Nodes come from the constructor or :meth:`add_node`.

    Recording: :meth:`start_recording` / :meth:`stop_recording` write everything the links
    yield to a recording file from the network thread; ``recording_changed(RecordingStatus)``
    reports progress about once a second, the end, and any error (which ends the recording).
    """

    recording_changed = Signal(object)

    def __init__(self, addresses: list[NodeAddress] = (), label: str = "live", parent=None) -> None:  # type: ignore[assignment]
        super().__init__(parent)
        self._addresses: dict[str, NodeAddress] = {}
        self._label = label
        self._tokens = itertools.count(1)
        self._worker: _Worker | None = None
        self._initial = list(addresses)
        self._recording: RecordingStatus | None = None

    def capabilities(self) -> Capabilities:
        return Capabilities(can_control=True, can_add_nodes=True, can_seek=False, live=True, label=self._label)

    def start(self) -> None:
        if self._worker is not None:
            return
        w = self._worker = _Worker()
        q = Qt.ConnectionType.QueuedConnection
        # Slots are methods of this object (not bound signals), so Qt drops what is still
        # queued if this object is deleted first.
        w.snapshot.connect(self._on_snapshot, q)
        w.message.connect(self._on_message, q)
        w.link_state.connect(self._on_link_state, q)
        w.done.connect(self._on_done, q)
        w.failed.connect(self._on_failed, q)
        w.problem.connect(self._on_problem, q)
        w.recording.connect(self._on_recording, q)
        w.start()
        for addr in self._initial:
            if addr.key not in self._addresses:  # from the constructor: announce it now
                self._addresses[addr.key] = addr
                self.node_added.emit(addr.key)
                self.link_state.emit(addr.key, "connecting")
            w.commands.put(("add", addr))  # added before start(): the worker takes it now
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

    # ---- recording ----

    def start_recording(self, path: str, title: str = "", notes: str = "") -> None:
        """Begin recording every followed node to ``path`` (done on the network thread);
        ``recording_changed`` says whether it started."""
        if self._worker is None:
            status = RecordingStatus(False, str(path), error=f"cannot record to {path}: the app is not connected")
            from PySide6.QtCore import QTimer
            QTimer.singleShot(0, lambda: self.recording_changed.emit(status))
            return
        self._worker.commands.put(("record", str(path), title, notes))

    def stop_recording(self, title: str | None = None, notes: str | None = None) -> None:
        """Stop recording; ``title``/``notes`` (when given) are saved into the file."""
        if self._worker is not None:
            self._worker.commands.put(("record_stop", title, notes))

    def set_recording_meta(self, path: str, title: str | None, notes: str | None) -> None:
        """Edit the title/notes of a finished recording (on the network thread)."""
        if self._worker is not None:
            self._worker.commands.put(("record_meta", str(path), title, notes))

    def recording(self) -> RecordingStatus | None:
        """The last status heard (None before any recording)."""
        return self._recording

    def is_recording(self) -> bool:
        return self._recording is not None and self._recording.active

    def _on_snapshot(self, key: str, snap) -> None:
        self.snapshot.emit(key, snap)

    def _on_message(self, key: str, msg) -> None:
        self.message.emit(key, msg)

    def _on_done(self, token: int, key: str, reply) -> None:
        self.request_done.emit(token, key, reply)

    def _on_failed(self, token: int, failure) -> None:
        self.request_failed.emit(token, failure)

    def _on_problem(self, text: str) -> None:
        self.problem.emit(text)

    def _on_recording(self, status: RecordingStatus) -> None:
        self._recording = status
        self.recording_changed.emit(status)

    def _on_link_state(self, key: str, state: str, detail: str) -> None:
        if key not in self._addresses:
            return
        self.link_state.emit(key, state)
        if state in ("stale", "down") and detail:
            self.problem.emit(f"node {key!r} is {state}: {detail}")
