"""LiveSource: agentd daemons, followed from one worker thread that owns every connection.

The worker QThread owns a :class:`agentd.transport.nodes.NodeSet`: per node a stream link
(Clone pattern, staleness, reconnect) and a request client that sends without waiting and
hands back replies by request id. This module imports no zmq: sockets stay in
``agentd.transport``. Decoded, immutable structs cross to the GUI thread through queued
signals; commands (typed dataclasses of :mod:`gui.sources.live_commands`) cross the other way
through a :class:`~gui.sources.live_commands.CommandQueue` whose wake-up pipe the worker polls
with the sockets. The GUI thread never touches the network or the disk.

Over 500 lines: the worker thread's one loop (links, requests, relays, recording) and the
source object whose signals it feeds are read together; the commands, the recording session
and the relay fan-in rules are already in modules of their own.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt, QThread, QTimer, Signal

from agentd.protocol.link import LinkEvent, LinkMessage, LinkSnapshot, LinkState
from agentd.protocol.messages import Cancel, ErrorReply, Migrate, Reply, Request
from agentd.protocol.relay import FollowReply, NodesReply, RelayedMsg, SummaryMsg, Unfollow, phased_topics
from agentd.store.recording import RecordingError
from agentd.transport.auth import public_key_text
from agentd.transport.client import ClientError
from agentd.transport.nodes import NodeSet, Polled
from gui.sources.base import Capabilities, DataSource, NodeAddress, RequestFailure
from gui.sources.live_commands import (
    AddNode,
    CommandQueue,
    RemoveNode,
    SendRequest,
    SetRecordingMeta,
    StartRecording,
    StopRecording,
    WatchDetail,
)
from gui.sources.live_recording import (
    RecordingSession,
    RecordingStatus,
    set_recording_meta,
)
from gui.sources.relay_fanin import FanOut, RelayFanIn

__all__ = ["LiveSource", "RecordingStatus"]
log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.25  # the longest the worker sleeps: timers (timeouts, staleness) need it
REQUEST_TIMEOUT_S = 10.0
# A migration replies when the checkpoint has travelled; a cancel waits out the grace period.
SLOW_REQUEST_TIMEOUT_S: dict[type[Request], float] = {Migrate: 600.0, Cancel: 30.0}
STOP_WAIT_MS = 3000
SEND_WAIT_S = 3.0
_zombies: list[QThread] = []  # workers that did not stop in time; never destroy a running QThread


@dataclass
class _Outgoing:
    """A request not sent yet: its node has no connection; it may wait until ``deadline``."""

    token: int
    key: str
    req: Request
    deadline: float


@dataclass
class _Pending:
    """A request sent and waiting for its reply until ``deadline``."""

    token: int
    key: str
    req: Request
    deadline: float


class _Worker(QThread):
    """The thread that owns the connections. Talks to the GUI thread only through signals and
    ``commands``."""

    snapshot = Signal(str, object)
    message = Signal(str, object)
    link_state = Signal(str, str, str)
    done = Signal(int, str, object)
    failed = Signal(int, object)
    problem = Signal(str)
    recording = Signal(object)  # RecordingStatus
    relayed = Signal(object)  # FanOut: nodes behind relays (summaries, links, notes)

    def __init__(self) -> None:
        super().__init__()
        self.commands = CommandQueue()
        self._stopping = False
        self._nodes: NodeSet | None = None
        self._endpoints: dict[str, str] = {}
        self._outbox: list[_Outgoing] = []
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._rec: RecordingSession | None = None
        self._direct: set[str] = set()
        self._fanin = RelayFanIn(self._direct)
        self._internal: dict[tuple[str, int], Request] = {}  # the worker's own requests to relays
        # One handler per command type: a new command is a new entry, never a new branch.
        self._handlers: dict[type, Callable[[Any], None]] = {
            AddNode: self._add_node,
            RemoveNode: self._remove_node,
            SendRequest: self._queue_request,
            StartRecording: self._start_recording,
            StopRecording: self._stop_recording_cmd,
            SetRecordingMeta: self._set_meta,
            WatchDetail: lambda cmd: self._fanin.set_detail(cmd.key, time.monotonic()),
        }

    def request_stop(self) -> None:
        self._stopping = True
        self.commands.wake()

    def run(self) -> None:
        nodes = self._nodes = NodeSet()
        try:
            while not self._stopping:
                for cmd in self.commands.take_all():
                    self._handlers[type(cmd)](cmd)
                self._flush_outbox()
                try:
                    polled = nodes.poll(POLL_INTERVAL_S, fds=[self.commands.fileno()])
                except ClientError as exc:
                    self.problem.emit(f"{exc}; retrying")
                    time.sleep(0.05)
                    continue
                self._on_polled(polled)
                self._expire(time.monotonic())
                self._relays_out()
        finally:
            self._shutdown(nodes)

    def _on_polled(self, polled: Polled) -> None:
        for key, message in polled.failures:
            self.problem.emit(f"node {key!r}: {message}")
        now = time.monotonic()
        for key, ev in polled.events:
            if self._relay_event(key, ev, now):
                if self._rec is not None:
                    self._guard(lambda rec=self._rec, key=key, ev=ev: rec.record(key, ev))
                continue
            self._emit(key, ev)
            if self._rec is not None:
                self._guard(lambda rec=self._rec, key=key, ev=ev: rec.record(key, ev))
        if self._rec is not None:
            rec = self._rec
            status: list[RecordingStatus | None] = [None]
            self._guard(lambda: status.__setitem__(0, rec.tick()))
            if status[0] is not None and self._rec is rec:
                self.recording.emit(status[0])
        for key, req_id, reply in polled.replies:
            internal = self._internal.pop((key, req_id), None)
            if internal is not None:
                self._on_relay_reply(key, internal, reply, now)
            else:
                self._on_reply(key, req_id, reply)

    # ---- relays (gui.sources.relay_fanin keeps the rules; this thread does the I/O) ----

    def _relay_event(self, key: str, ev: LinkEvent, now: float) -> bool:
        """Feed a relay link's event to the fan-in; True when it is consumed here (summaries
        and relayed detail never reach the GUI thread as messages of the relay itself)."""
        fan = self._fanin
        if isinstance(ev, LinkSnapshot) and "relay" in ev.hello.capabilities:
            fan.relay_up(key, ev.hello.node, now)
        elif isinstance(ev, LinkState) and fan.is_relay(key):
            fan.relay_link(key, ev.state, now)
        elif isinstance(ev, LinkMessage) and fan.is_relay(key):
            fan.heard(key, now)
            if isinstance(ev.msg, SummaryMsg):
                fan.on_summaries(key, ev.msg.nodes, now)
                return True
            if isinstance(ev.msg, RelayedMsg):
                fan.on_relayed(key, ev.msg, now)
                return True
        return False

    def _on_relay_reply(self, key: str, req: Request, reply: Reply | ErrorReply, now: float) -> None:
        fan = self._fanin
        if isinstance(reply, ErrorReply):
            node = getattr(req, "node", "")
            if node:
                fan.on_follow_failed(key, node, reply.message)
            elif not isinstance(req, Unfollow):
                self.problem.emit(f"relay {key!r} refused {_what(req)}: {reply.message}")
        elif isinstance(reply, NodesReply):
            fan.on_nodes_reply(key, reply.nodes, now)
        elif isinstance(reply, FollowReply):
            fan.on_follow_reply(key, reply, now)

    def _relays_out(self) -> None:
        """Send what the fan-in asks and hand its news to the GUI thread in one signal."""
        fan = self._fanin
        if not fan.relays:
            return
        now = time.monotonic()
        fan.tick(now)
        out = fan.take()
        nodes = self._nodes
        assert nodes is not None
        for key, req in out.sends:
            try:
                req_id = nodes.send(key, req) if key in nodes else None
            except ClientError as exc:
                self.problem.emit(f"could not send {_what(req)} to relay {key!r}: {exc}")
                continue
            if req_id is not None:
                self._internal[(key, req_id)] = req
        for key, phases in out.narrow:
            if key in nodes:
                nodes.links[key].set_topics(phased_topics(phases))
        for node, snap in out.snapshots:
            self.snapshot.emit(node, snap)
        for node, msg in out.messages:
            self.message.emit(node, msg)
        if out.added or out.summaries or out.links or out.notes or out.notices:
            self.relayed.emit(FanOut(added=out.added, summaries=out.summaries, links=out.links, notes=out.notes,
                                     notices=out.notices))

    def _emit(self, key: str, ev: LinkEvent) -> None:
        if isinstance(ev, LinkSnapshot):
            self.snapshot.emit(key, ev.reply)
        elif isinstance(ev, LinkMessage):
            self.message.emit(key, ev.msg)
        elif isinstance(ev, LinkState):
            self.link_state.emit(key, ev.state, ev.detail)

    def _shutdown(self, nodes: NodeSet) -> None:
        if self._rec is not None:
            self._stop_recording(None, None)
        gone = "was not sent: the app is disconnecting"
        for o in self._outbox:
            self._fail(o.token, o.key, o.req, f"{_what(o.req)} on {o.key!r} {gone}")
        for p in self._pending.values():
            self._fail(p.token, p.key, p.req, f"{_what(p.req)} on {p.key!r} was abandoned: the app is disconnecting")
        self._outbox, self._pending = [], {}
        self.commands.close()
        for cmd in self.commands.take_all():
            if isinstance(cmd, SendRequest):
                self._fail(cmd.token, cmd.key, cmd.request, f"{_what(cmd.request)} on {cmd.key!r} {gone}")
        nodes.close()

    def _fail(self, token: int, key: str, req: Request, message: str) -> None:
        self.failed.emit(token, RequestFailure(key, req, None, message))

    # ---- commands ----

    def _add_node(self, cmd: AddNode) -> None:
        addr, nodes = cmd.address, self._nodes
        assert nodes is not None
        if addr.key in nodes:
            return
        self._endpoints[addr.key] = addr.endpoint
        self._direct.add(addr.key)
        try:
            nodes.add(addr.key, addr.endpoint, server_key=addr.server_key)
        except Exception as exc:  # noqa: BLE001 - a bad address or key file: say so, keep the others
            self.problem.emit(f"cannot follow node {addr.key!r} at {addr.endpoint}: {exc}")
            self.link_state.emit(addr.key, "down", str(exc))
            return
        if self._rec is not None:
            rec = self._rec
            self._guard(lambda: rec.follow(addr.key, addr.endpoint))

    def _remove_node(self, cmd: RemoveNode) -> None:
        assert self._nodes is not None
        self._nodes.remove(cmd.key)
        self._direct.discard(cmd.key)
        self._fanin.forget_relay(cmd.key)
        for pkey, p in list(self._pending.items()):
            if p.key == cmd.key:
                del self._pending[pkey]
                self._fail(p.token, p.key, p.req, f"node {cmd.key!r} was removed before it answered")

    def _queue_request(self, cmd: SendRequest) -> None:
        self._outbox.append(_Outgoing(cmd.token, cmd.key, cmd.request, time.monotonic() + SEND_WAIT_S))

    # ---- requests ----

    def _flush_outbox(self) -> None:
        """Send what can be sent now. A node without a live connection refuses a message at
        once instead of blocking this thread; such requests wait up to SEND_WAIT_S for the
        connection, then fail with a message."""
        nodes = self._nodes
        assert nodes is not None
        keep: list[_Outgoing] = []
        now = time.monotonic()
        for o in self._outbox:
            if o.key not in nodes:
                self._fail(o.token, o.key, o.req, f"node {o.key!r} is not connected; add it first")
                continue
            try:
                req_id = nodes.send(o.key, o.req)
            except ClientError as exc:
                self._fail(o.token, o.key, o.req, f"could not send {_what(o.req)} to node {o.key!r}: {exc}")
                continue
            if req_id is None:
                if now < o.deadline:
                    keep.append(o)
                else:
                    self._fail(o.token, o.key, o.req, f"node {o.key!r} is not reachable; {_what(o.req)} was not sent. "
                                                      "Wait until it is live again, then retry")
                continue
            self._pending[(o.key, req_id)] = _Pending(o.token, o.key, o.req, now + _timeout(o.req))
        self._outbox = keep

    def _on_reply(self, key: str, req_id: int, reply: Reply | ErrorReply) -> None:
        p = self._pending.pop((key, req_id), None)
        if p is None:
            return  # a reply nobody waits for any more
        if isinstance(reply, ErrorReply):
            self.failed.emit(p.token, RequestFailure(key, p.req, reply.code, reply.message, reply.field))
        else:
            self.done.emit(p.token, key, reply)

    def _expire(self, now: float) -> None:
        assert self._nodes is not None
        for (key, req_id), p in list(self._pending.items()):
            if now > p.deadline:
                del self._pending[(key, req_id)]
                self._nodes.give_up(key, req_id)
                self._fail(p.token, key, p.req,
                           f"node {key!r} did not answer {_what(p.req)} within {_timeout(p.req):g} s; "
                           "check that its agentd is running and reachable, then try again")

    # ---- recording (all of it on this thread: the GUI thread never touches the disk) ----

    def _guard(self, fn: Callable[[], object]) -> None:
        """Run one recorder call; a RecordingError (disk full, file gone) ends the recording
        with its message instead of ending this thread."""
        try:
            fn()
        except RecordingError as exc:
            self._abort_recording(str(exc))

    def _start_recording(self, cmd: StartRecording) -> None:
        if self._rec is not None:
            self.recording.emit(self._rec.status(error=f"already recording to {self._rec.path}; stop that first"))
            return
        try:
            rec = RecordingSession(cmd.path, cmd.title, cmd.notes)
            assert self._nodes is not None
            for key, link in self._nodes.links.items():
                rec.follow(key, self._endpoints.get(key, link.endpoint), link.state)
                # A fresh snapshot, so the recording starts with the inventory and the job table.
                link.resync()
        except RecordingError as exc:
            self.recording.emit(RecordingStatus(False, cmd.path, error=str(exc)))
            return
        self._rec = rec
        self.recording.emit(rec.status())

    def _stop_recording_cmd(self, cmd: StopRecording) -> None:
        if self._rec is not None:
            self._stop_recording(cmd.title, cmd.notes)

    def _abort_recording(self, message: str) -> None:
        rec, self._rec = self._rec, None
        if rec is not None:
            rec.close()
            self.recording.emit(rec.status(active=False, error=message))

    def _stop_recording(self, title: str | None, notes: str | None) -> None:
        rec, self._rec = self._rec, None
        assert rec is not None
        error = rec.close()
        if not error and (title is not None or notes is not None):
            error = set_recording_meta(rec.path, title, notes)
        self.recording.emit(rec.status(active=False, error=error))

    def _set_meta(self, cmd: SetRecordingMeta) -> None:
        error = set_recording_meta(cmd.path, cmd.title, cmd.notes)
        if error:
            self.problem.emit(f"could not save the recording's title and notes: {error}")


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
        # Nodes behind relays: key (node name) -> the relay key that serves it now. Their
        # requests (job actions) go to that relay, which routes them by job id.
        self._via: dict[str, str] = {}
        self._relayed: dict[str, None] = {}  # their keys, in the order they appeared
        self._token_key: dict[int, str] = {}  # a request sent through a relay -> the node asked

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
        w.relayed.connect(self._on_relayed, q)
        w.start()
        for addr in self._initial:
            if addr.key not in self._addresses:  # from the constructor: announce it now
                self._addresses[addr.key] = addr
                self.node_added.emit(addr.key)
                self.link_state.emit(addr.key, "connecting")
            w.commands.put(AddNode(addr))  # added before start(): the worker takes it now
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
        return [*self._addresses, *(k for k in self._relayed if k not in self._addresses)]

    def relay_of(self, key: str) -> str | None:
        """The relay key that serves node ``key`` now (None: followed directly or unknown)."""
        return None if key in self._addresses else self._via.get(key)

    def watch_detail(self, key: str | None) -> None:
        if self._worker is not None:
            self._worker.commands.put(WatchDetail(key))

    def address(self, key: str) -> NodeAddress | None:
        return self._addresses.get(key)

    def now_s(self) -> float:
        return time.time()

    def add_node(self, address: NodeAddress) -> None:
        if address.key in self._addresses:
            return
        try:  # a key file becomes the key itself: requests hand it to daemons, which lack our files
            address = dataclasses.replace(address, server_key=public_key_text(address.server_key or "") or None)
        except (ValueError, OSError):
            pass  # kept as given: connecting reports the bad key on the node's link
        self._addresses[address.key] = address
        self.node_added.emit(address.key)
        self.link_state.emit(address.key, "connecting")
        if self._worker is not None:
            self._worker.commands.put(AddNode(address))
        else:
            self._initial.append(address)

    def remove_node(self, key: str) -> None:
        if self._relayed.pop(key, None) is not None and key not in self._addresses:
            self.node_removed.emit(key)  # it comes back with the relay's next summary
            return
        if self._addresses.pop(key, None) is None:
            return
        if self._worker is not None:
            self._worker.commands.put(RemoveNode(key))
        self.node_removed.emit(key)

    def request(self, key: str, req: Request) -> int:
        token = next(self._tokens)
        if self._worker is None:
            failure = RequestFailure(key, req, None, f"{_what(req)} on {key!r} was not sent: the app is not connected")
            # Asynchronous even here, as the contract promises.
            QTimer.singleShot(0, lambda: self.request_failed.emit(token, failure))
            return token
        target = self.relay_of(key)
        if target is not None:
            self._token_key[token] = key
        self._worker.commands.put(SendRequest(token, target or key, req))
        return token

    # ---- recording ----

    def start_recording(self, path: str, title: str = "", notes: str = "") -> None:
        """Begin recording every followed node to ``path`` (done on the network thread);
        ``recording_changed`` says whether it started."""
        if self._worker is None:
            status = RecordingStatus(False, str(path), error=f"cannot record to {path}: the app is not connected")
            QTimer.singleShot(0, lambda: self.recording_changed.emit(status))
            return
        self._worker.commands.put(StartRecording(str(path), title, notes))

    def stop_recording(self, title: str | None = None, notes: str | None = None) -> None:
        """Stop recording; ``title``/``notes`` (when given) are saved into the file."""
        if self._worker is not None:
            self._worker.commands.put(StopRecording(title, notes))

    def set_recording_meta(self, path: str, title: str | None, notes: str | None) -> None:
        """Edit the title/notes of a finished recording (on the network thread)."""
        if self._worker is not None:
            self._worker.commands.put(SetRecordingMeta(str(path), title, notes))

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
        self.request_done.emit(token, self._token_key.pop(token, key), reply)

    def _on_failed(self, token: int, failure) -> None:
        key = self._token_key.pop(token, None)
        if key is not None:
            failure = dataclasses.replace(failure, node=key)
        self.request_failed.emit(token, failure)

    def _on_relayed(self, out: FanOut) -> None:
        for node, relay in out.added:
            self._via[node] = relay
            if node not in self._addresses and node not in self._relayed:
                self._relayed[node] = None
                self.node_added.emit(node)
        if out.summaries:
            self.summaries.emit([s for s in out.summaries if s.node not in self._addresses])
        for node, state, _detail in out.links:
            if node in self._relayed:
                self.link_state.emit(node, state)
        for note in out.notes:
            self.problem.emit(note)
        for notice in out.notices:
            self.notice.emit(notice)

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
