"""The daemon's sockets: a ROUTER for requests, a PUB for the stream, and a wake-up pipe.

Only the daemon's loop thread touches these sockets; worker threads hand replies and stream
messages over through thread-safe queues and a wake-up on an inproc PAIR socket.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import zmq

from agentd.protocol import MAX_MESSAGE_BYTES, encode, topic_of
from agentd.protocol.messages import StreamMsg
from agentd.transport.auth import authorized_keys, is_loopback, load_or_create_keypair, start_role_authenticator

log = logging.getLogger(__name__)


class BindError(RuntimeError):
    """A socket could not be bound; the message names the endpoint and the likely cause."""


@dataclass(frozen=True)
class Incoming:
    """One request as received: routing identity, body, and the CURVE user ("role:name")."""

    identity: bytes
    body: bytes | memoryview
    user: str | None


class DaemonSockets:
    """Owns the ROUTER/PUB sockets of one daemon; call every method from one thread only,
    except :meth:`reply_later` and :meth:`publish_later`, which any thread may call."""

    def __init__(self, ctl: str, pub: str, state_dir: Path, *, require_curve: bool | None = None) -> None:
        self.ctx = zmq.Context()
        self.auth: Any = None  # the ZAP authenticator thread, with CURVE only
        secure = require_curve if require_curve is not None else not (is_loopback(ctl) and is_loopback(pub))
        self.secure = secure
        self._replies: queue.SimpleQueue[tuple[bytes, bytes]] = queue.SimpleQueue()
        self._stream: queue.SimpleQueue[StreamMsg] = queue.SimpleQueue()
        self._wake_addr = f"inproc://wake-{id(self)}"
        self._wake_lock = threading.Lock()
        self.dropped_frames = 0
        try:
            if secure:
                self._start_auth(state_dir)
            self.router = self._socket(zmq.ROUTER, state_dir)
            self.pub = self._socket(zmq.PUB, state_dir)
            self.pub.setsockopt(zmq.SNDHWM, 10000)
            self._bind(self.router, ctl, "request (--ctl)")
            self._bind(self.pub, pub, "stream (--pub)")
            self.wake_rx = self.ctx.socket(zmq.PULL)
            self.wake_rx.bind(self._wake_addr)
            self._wake_tx = self.ctx.socket(zmq.PUSH)
            self._wake_tx.setsockopt(zmq.LINGER, 0)
            self._wake_tx.connect(self._wake_addr)
        except Exception:
            self.close()
            raise
        self.ctl_endpoint = self.router.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.pub_endpoint = self.pub.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.poller = zmq.Poller()
        self.poller.register(self.router, zmq.POLLIN)
        self.poller.register(self.wake_rx, zmq.POLLIN)

    def _start_auth(self, state_dir: Path) -> None:
        keys_root = state_dir / "authorized_keys"
        self._keys = load_or_create_keypair(state_dir / "keys", "server")
        if not authorized_keys(keys_root):
            raise BindError(
                f"refusing to listen on a non-loopback address with no authorized client keys in {keys_root}; "
                f"add one with `agentctl keys authorize --state-dir {state_dir} --role operator NAME KEYFILE` "
                f"(server public key: {state_dir / 'keys' / 'server.key'})"
            )
        self.auth = start_role_authenticator(self.ctx, keys_root)

    def _socket(self, kind: int, state_dir: Path) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        if self.secure:
            sock.curve_server = True
            sock.curve_publickey, sock.curve_secretkey = self._keys
        return sock

    @staticmethod
    def _bind(sock: zmq.Socket, endpoint: str, what: str) -> None:
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            hint = "another agentd (or program) uses that port; pick another with" if exc.errno == zmq.EADDRINUSE else "check the address in"
            raise BindError(f"cannot bind the {what} socket to {endpoint}: {exc.strerror}; {hint} {what.split()[-1]}") from None

    def poll(self, timeout_ms: int) -> list[Incoming]:
        """Wait up to ``timeout_ms`` and return every request now waiting (drained fully)."""
        events = dict(self.poller.poll(timeout_ms))
        if self.wake_rx in events:
            while True:
                try:
                    self.wake_rx.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
        out: list[Incoming] = []
        while True:
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            if len(frames) != 2:
                # A DEALER sends [body]; anything else cannot be answered sensibly.
                self.dropped_frames += 1
                continue
            user = None
            if self.secure:
                try:
                    user = frames[1].get("User-Id")
                except zmq.ZMQError:
                    user = None
            # The body as a view of the frame: a 1 MiB checkpoint chunk is not copied to be decoded.
            out.append(Incoming(frames[0].bytes, frames[1].buffer, user))
        return out

    def send_reply(self, identity: bytes, reply: msgspec.Struct | bytes) -> None:
        body = reply if isinstance(reply, bytes) else encode(reply)
        try:
            self.router.send_multipart([identity, body], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the client went away; nothing to tell it
            log.debug("reply dropped: %s", exc)

    def publish(self, msg: StreamMsg) -> None:
        try:
            self.pub.send_multipart([topic_of(msg), encode(msg)], zmq.NOBLOCK)
        except zmq.Again:
            self.dropped_frames += 1

    def reply_later(self, identity: bytes, reply: msgspec.Struct) -> None:
        """Thread-safe: queue a reply for the loop thread and wake it."""
        self._replies.put((identity, encode(reply)))
        self.wake()

    def wake(self) -> None:
        with self._wake_lock:
            try:
                self._wake_tx.send(b"", zmq.NOBLOCK)
            except zmq.ZMQError:
                pass

    def flush_replies(self) -> None:
        while True:
            try:
                identity, body = self._replies.get_nowait()
            except queue.Empty:
                return
            self.send_reply(identity, body)

    def close(self) -> None:
        for name in ("router", "pub", "wake_rx", "_wake_tx"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()
