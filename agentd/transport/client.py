"""Clients of agentd: NodeClient for requests, NodeLink for the live stream (Clone pattern).

Neither is thread-safe: one thread owns each object (the GUI's worker thread, the CLI's main
thread, the recorder's loop). A program that follows many nodes from one thread sends with
:meth:`NodeClient.send_nowait`, sleeps in :func:`agentd.transport.poll.wait_ready` over its
links, clients and own file descriptors, then takes what arrived with
:meth:`NodeClient.take_replies` and :meth:`NodeLink.handle`. The link events are the typed
structs of :mod:`agentd.protocol.link` (re-exported here).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import msgspec
import zmq

from agentd.protocol import MAX_MESSAGE_BYTES, ProtocolError, decode_reply, decode_stream, encode
from agentd.protocol.link import LinkEvent, LinkMessage, LinkSnapshot, LinkState, LinkStatus
from agentd.protocol.messages import ErrorReply, Hello, HelloReply, Reply, Request, Snapshot, SnapshotReply, StreamMsg
from agentd.transport.auth import (
    client_keys_dir,
    connect_address,
    endpoint_host,
    load_or_create_keypair,
    load_public_key,
)
from agentd.transport.errors import ClientError
from agentd.transport.poll import Ready, wait_ready

__all__ = [
    "ClientError", "LinkEvent", "LinkMessage", "LinkSet", "LinkSnapshot", "LinkState", "NodeClient", "NodeLink",
    "RemoteError", "Unreachable", "default_actor", "stream_endpoint",
]

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Reply)
STALE_AFTER_S = 3.5  # three missed one-second heartbeats
RETRY_AFTER_S = 2.0
_ids = itertools.count(1)


class _ReplyId(msgspec.Struct):
    """Just the id of a reply, read before its type is known (which request it answers)."""

    id: int = 0


class Unreachable(ClientError):
    """No answer from the endpoint within the timeout."""

    def __init__(self, endpoint: str, timeout_s: float) -> None:
        super().__init__(f"agentd at {endpoint} did not answer within {timeout_s:g} s (is it running? is the address right?)")
        self.endpoint = endpoint


class RemoteError(ClientError):
    """The daemon answered with an error reply."""

    def __init__(self, code: int, message: str, field: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


def default_actor() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - getuser raises several kinds (KeyError, OSError); the uid will do
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _apply_curve(sock: zmq.Socket[bytes], server_key: str | bytes | None, keys_dir: Path | None) -> None:
    if not server_key:
        return
    server_public = server_key if isinstance(server_key, bytes) else load_public_key(server_key)
    public, secret = load_or_create_keypair(Path(keys_dir) if keys_dir else client_keys_dir(), "client")
    sock.curve_serverkey = server_public
    sock.curve_publickey = public
    sock.curve_secretkey = secret


class NodeClient:
    """Request/reply with one daemon over a DEALER, with ids and timeouts (lazy pirate: a
    timed-out socket is replaced so late replies never confuse the next call)."""

    def __init__(
        self,
        endpoint: str,
        *,
        server_key: str | bytes | None = None,
        keys_dir: Path | None = None,
        timeout_s: float = 5.0,
        actor: str | None = None,
        ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        endpoint_host(endpoint)  # validate early, with a message naming the endpoint
        self.endpoint = endpoint
        self.server_key = server_key
        self.keys_dir = keys_dir
        self.timeout_s = timeout_s
        self.actor = actor if actor is not None else default_actor()
        self._own_ctx = ctx is None
        self.ctx = ctx or zmq.Context()
        self.sock: zmq.Socket[bytes] | None = None
        self._hello: HelloReply | None = None
        self._expected: dict[int, type[Reply]] = {}  # send_nowait ids -> the reply type awaited

    def _socket(self) -> zmq.Socket[bytes]:
        if self.sock is None:
            s = self.ctx.socket(zmq.DEALER)
            try:
                s.setsockopt(zmq.LINGER, 0)
                s.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
                _apply_curve(s, self.server_key, self.keys_dir)
                s.connect(self.endpoint if self.server_key else connect_address(self.endpoint))
            except Exception:
                s.close(linger=0)  # or ctx.term() would wait for it forever
                raise
            self.sock = s
        return self.sock

    def connect(self) -> None:
        """Open the connection now (it is otherwise opened by the first request), so the first
        :meth:`send_nowait` finds it up."""
        self._socket()

    def sockets(self) -> list[zmq.Socket[bytes]]:
        """The socket to wait on with :func:`~agentd.transport.poll.wait_ready` (none until
        connected)."""
        return [self.sock] if self.sock is not None else []

    def reset(self) -> None:
        """Drop the connection (lazy pirate: a late reply can never reach a later request);
        the next request reconnects. Replies awaited by :meth:`send_nowait` are forgotten."""
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None
        self._expected.clear()

    def send_nowait(self, req: Request) -> int | None:
        """Send ``req`` without blocking and return its request id, whose reply
        :meth:`take_replies` hands back; None when no connection is up yet (try again later).
        ClientError when the socket failed (it is reset; the next call reconnects)."""
        req_id = next(_ids)
        body = encode(msgspec.structs.replace(req, id=req_id, actor=req.actor or self.actor))
        try:
            self._socket().send(body, zmq.NOBLOCK)
        except zmq.Again:
            return None
        except zmq.ZMQError as exc:
            self.reset()
            raise ClientError(f"could not send to agentd at {self.endpoint}: {exc}") from None
        self._expected[req_id] = type(req).reply
        return req_id

    def take_replies(self) -> list[tuple[int, Reply | ErrorReply]]:
        """The replies to :meth:`send_nowait` requests that arrived, without waiting: (request
        id, reply), an ErrorReply for a refusal or for a reply this client cannot read. Replies
        nobody waits for any more are dropped."""
        out: list[tuple[int, Reply | ErrorReply]] = []
        while self.sock is not None:
            try:
                body = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            except zmq.ZMQError as exc:
                log.warning("agentd at %s: receive failed (%s); reconnecting", self.endpoint, exc)
                self.reset()
                break
            try:
                req_id = msgspec.msgpack.decode(body, type=_ReplyId).id
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # not even an id: nothing to match it with
            expected = self._expected.pop(req_id, None)
            if expected is None:
                continue
            reply: Reply | ErrorReply
            try:
                reply = decode_reply(body, expected)
            except ProtocolError as exc:
                reply = ErrorReply(id=req_id, code=int(exc.code), field=exc.field,
                                   message=f"agentd at {self.endpoint} sent a reply this client cannot read: {exc.message}")
            out.append((req_id, reply))
        return out

    def forget(self, req_id: int) -> None:
        """Stop waiting for one reply (its caller gave up); a late reply is then dropped."""
        self._expected.pop(req_id, None)

    def send(self, req: Request) -> int:
        """Send without waiting; returns the request id (its reply comes to whoever reads this socket)."""
        req_id = next(_ids)
        req = msgspec.structs.replace(req, id=req_id, actor=req.actor or self.actor)
        try:
            self._socket().send(encode(req), zmq.NOBLOCK)
        except zmq.Again:
            pass  # no connection yet: the caller's deadline reports it, and it retries
        return req_id

    def call(self, req: Request, timeout_s: float | None = None) -> Reply:
        """Send ``req`` and return its reply; RemoteError for error replies, Unreachable on
        timeout."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        sock = self._socket()
        req_id = next(_ids)
        req = msgspec.structs.replace(req, id=req_id, actor=req.actor or self.actor)
        deadline = time.monotonic() + timeout
        try:
            # Queued until the connection is up; a peer that never answers hits the deadline.
            sock.send(encode(req), zmq.NOBLOCK)
        except zmq.Again:
            self.reset()
            raise Unreachable(self.endpoint, timeout) from None
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(max(1, int(left * 1000)), zmq.POLLIN):
                self.reset()
                raise Unreachable(self.endpoint, timeout)
            body = sock.recv()
            try:
                reply = decode_reply(body, type(req).reply)
            except ProtocolError as exc:
                raise RemoteError(exc.code, f"agentd at {self.endpoint} sent a reply this client cannot read: {exc.message}") from None
            if reply.id != req_id:
                continue  # a late reply to an earlier request
            if isinstance(reply, ErrorReply):
                raise RemoteError(reply.code, reply.message, reply.field)
            return reply

    def hello(self) -> HelloReply:
        if self._hello is None:
            reply = self.call(Hello())
            assert isinstance(reply, HelloReply)
            self._hello = reply
        return self._hello

    def close(self) -> None:
        self.reset()
        if self._own_ctx:
            self.ctx.term()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- the live stream -------------------------------------------------------------------
# The events (LinkSnapshot, LinkMessage, LinkState) live in agentd.protocol.link.


def stream_endpoint(ctl: str, pub: str) -> str:
    """The stream endpoint as seen from the client: a wildcard bind host becomes the host
    the client used for requests."""
    host = endpoint_host(pub)
    if host in ("*", "0.0.0.0", "::"):
        return pub.replace(host, endpoint_host(ctl), 1)
    return pub


@dataclass
class NodeLink:
    """One daemon's live feed: hello -> subscribe -> snapshot -> stream, with staleness
    detection, sequence-gap resync and automatic reconnect. Never blocks longer than asked."""

    endpoint: str
    server_key: str | bytes | None = None
    keys_dir: Path | None = None
    history: int = 2
    hello_timeout_s: float = 2.0
    stale_after_s: float = STALE_AFTER_S
    topics: tuple[bytes, ...] = (b"",)
    # Stream messages queued per link at most; beyond it the gap is found by seq and repaired
    # with a fresh snapshot. A relay sets it low: thousands of links x 10,000 is gigabytes.
    sub_hwm: int = 10000
    ctx: zmq.Context[zmq.Socket[bytes]] | None = None
    state: LinkStatus = "connecting"
    node: str = ""
    _events: list[LinkEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._own_ctx = self.ctx is None
        self.ctx = self.ctx or zmq.Context()
        self.client = NodeClient(self.endpoint, server_key=self.server_key, keys_dir=self.keys_dir, ctx=self.ctx)
        self.sub: zmq.Socket[bytes] | None = None
        self.hello_reply: HelloReply | None = None
        self.last_seq = 0
        self.last_rx = 0.0
        self._pending: tuple[str, int, float] | None = None  # (what, req id, deadline)
        self._buffer: list[StreamMsg] = []
        self._next_try = 0.0
        self._start()

    # -- sockets a caller may poll together with others (see LinkSet) --
    def sockets(self) -> list[zmq.Socket[bytes]]:
        socks = [self.client._socket()]
        if self.sub is not None:
            socks.append(self.sub)
        return socks

    def _set_state(self, state: LinkStatus, detail: str = "") -> None:
        if state != self.state:
            self.state = state
            self._events.append(LinkState(self.endpoint, self.node, state, detail))

    def _start(self) -> None:
        self.client.reset()
        self._close_sub()
        self._buffer.clear()
        self._pending = ("hello", self.client.send(Hello()), time.monotonic() + self.hello_timeout_s)

    def _close_sub(self) -> None:
        if self.sub is not None:
            self.sub.close(linger=0)
            self.sub = None

    def _subscribe_and_snapshot(self) -> None:
        assert self.hello_reply is not None
        self._close_sub()
        sub = self.ctx.socket(zmq.SUB)  # type: ignore[union-attr]
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        sub.setsockopt(zmq.RCVHWM, self.sub_hwm)
        _apply_curve(sub, self.server_key, self.keys_dir)
        for t in self.topics:
            sub.setsockopt(zmq.SUBSCRIBE, t)
        sub.connect(stream_endpoint(self.endpoint, self.hello_reply.pub_endpoint))
        self.sub = sub
        self._buffer.clear()
        self._pending = ("snapshot", self.client.send(Snapshot(history=self.history)), time.monotonic() + self.hello_timeout_s)

    def _on_reply(self, body: bytes, now: float) -> None:
        if self._pending is None:
            return
        what, req_id, _ = self._pending
        try:
            reply = decode_reply(body, HelloReply if what == "hello" else SnapshotReply)
        except ProtocolError as exc:
            self._fail(f"unreadable {what} reply: {exc.message}", now)
            return
        if reply.id != req_id:
            return
        if isinstance(reply, ErrorReply):
            self._fail(f"{what} refused: {reply.message}", now)
            return
        self._pending = None
        if isinstance(reply, HelloReply):
            self.hello_reply = reply
            self.node = reply.node
            self._subscribe_and_snapshot()
            return
        assert isinstance(reply, SnapshotReply)
        assert self.hello_reply is not None
        self.last_seq = reply.seq
        self.last_rx = now
        self._events.append(LinkSnapshot(self.endpoint, self.node, reply, self.hello_reply))
        self._set_state("live")
        for msg in self._buffer:
            self._accept(msg, now)
        self._buffer.clear()

    def _fail(self, detail: str, now: float) -> None:
        self._pending = None
        self._close_sub()
        self.client.reset()
        self._set_state("down", detail)
        self._next_try = now + RETRY_AFTER_S

    def _accept(self, msg: StreamMsg, now: float) -> None:
        if msg.seq <= self.last_seq:
            # PUB/SUB never repeats a message: the daemon restarted and its sequence began
            # again, so what we hold is from a previous life. Take a fresh snapshot.
            self._resync(now)
            return
        if msg.seq != self.last_seq + 1 and self.topics == (b"",):
            # Subscribed to everything, a gap is a loss. Subscribed to some topics only, gaps
            # are the others' messages (docs/protocol.md): accepted; heartbeats keep it live.
            log.info("%s: stream gap %d -> %d, resyncing", self.endpoint, self.last_seq, msg.seq)
            self._resync(now)
            return
        self.last_seq = msg.seq
        self.last_rx = now
        if self.state == "stale":
            self._set_state("live")
        self._events.append(LinkMessage(self.endpoint, msg))

    def set_topics(self, topics: tuple[bytes, ...]) -> None:
        """Subscribe to ``topics`` from now on (this stream and after any resync), with no new
        snapshot: a relay's client narrows to summary phases once it knows the subtree's size."""
        if topics == self.topics:
            return
        if self.sub is not None:
            for t in topics:
                self.sub.setsockopt(zmq.SUBSCRIBE, t)
            for t in self.topics:
                if t not in topics:
                    self.sub.setsockopt(zmq.UNSUBSCRIBE, t)
        self.topics = tuple(topics)

    def _resync(self, now: float) -> None:
        self._pending = None
        self._start()

    def resync(self) -> None:
        """Take a fresh hello + snapshot now (a recorder starting wants the full state)."""
        self._resync(time.monotonic())

    def handle(self, ready: Ready | Iterable[zmq.Socket[bytes]], now: float | None = None) -> list[LinkEvent]:
        """Process sockets that are ready (a :class:`~agentd.transport.poll.Ready` or the
        sockets themselves), timers, and return the events that resulted."""
        now = time.monotonic() if now is None else now
        ready_socks: frozenset[object] = ready.sockets if isinstance(ready, Ready) else frozenset(ready)
        sock = self.client.sock
        if sock is not None and sock in ready_socks:
            while True:
                try:
                    body = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._on_reply(body, now)
                sock = self.client.sock
                if sock is None:
                    break
        if self.sub is not None and self.sub in ready_socks:
            while self.sub is not None:
                try:
                    _topic, body = self.sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                except ValueError:
                    continue  # not two frames: not from agentd
                try:
                    msg = decode_stream(body)
                except ProtocolError as exc:
                    log.warning("%s: dropped unreadable stream message: %s", self.endpoint, exc.message)
                    continue
                if self._pending is not None and self._pending[0] == "snapshot":
                    self._buffer.append(msg)
                elif self._pending is None:
                    self._accept(msg, now)
        self._timers(now)
        events, self._events = self._events, []
        return events

    def _timers(self, now: float) -> None:
        if self._pending is not None:
            what, _, deadline = self._pending
            if now > deadline:
                self._fail(f"no answer to {what} within {self.hello_timeout_s:g} s", now)
            return
        if self.state == "down":
            if now >= self._next_try:
                self._start()
            return
        if self.state == "live" and now - self.last_rx > self.stale_after_s:
            self._set_state("stale", f"no message for {now - self.last_rx:.1f} s")
            # Probe: a daemon that answers hello gets a fresh subscription and snapshot.
            self._start()

    def poll(self, timeout_s: float) -> list[LinkEvent]:
        """Wait up to ``timeout_s`` for this link alone and return its events."""
        return self.handle(wait_ready([self], timeout_s))

    def close(self) -> None:
        self._close_sub()
        self.client.close()
        if self._own_ctx:
            self.ctx.term()  # type: ignore[union-attr]


class LinkSet:
    """Many NodeLinks polled together from one thread (the app's worker, the recorder)."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]] | None = None) -> None:
        self._own_ctx = ctx is None
        self.ctx = ctx or zmq.Context()
        self.links: dict[str, NodeLink] = {}

    def add(self, endpoint: str, server_key: str | bytes | None = None, **kw: object) -> NodeLink:
        if endpoint not in self.links:
            self.links[endpoint] = NodeLink(endpoint, server_key=server_key, ctx=self.ctx, **kw)  # type: ignore[arg-type]
        return self.links[endpoint]

    def remove(self, endpoint: str) -> None:
        link = self.links.pop(endpoint, None)
        if link is not None:
            link.close()

    def poll(self, timeout_s: float) -> list[LinkEvent]:
        ready = wait_ready(self.links.values(), timeout_s)
        now = time.monotonic()
        out: list[LinkEvent] = []
        for link in list(self.links.values()):
            out.extend(link.handle(ready, now))
        return out

    def close(self) -> None:
        for link in self.links.values():
            link.close()
        self.links.clear()
        if self._own_ctx:
            self.ctx.term()
