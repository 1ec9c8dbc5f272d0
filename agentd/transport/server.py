"""The daemon's sockets: ROUTERs for requests, a PUB for the stream, and a wake-up pipe.

Only the daemon's loop thread touches these sockets; worker threads hand replies and stream
messages over through thread-safe queues and a wake-up on an inproc PAIR socket.

Two request sockets: ``ctl`` on the configured endpoint (CURVE on any non-loopback address)
and ``local``, an ``ipc://`` socket every local user can reach, where the kernel names the
caller. Every connection passes the ZAP handler (:class:`~agentd.transport.auth.ZapHandler`),
so each request arrives with a verified peer id.

What a hostile client cannot do here:

* send a frame over :data:`MAX_MESSAGE_BYTES` (``ZMQ_MAXMSGSIZE`` drops the connection);
* queue unbounded replies by never reading them (``SNDHWM`` per peer: replies past it are
  dropped, the kernel's socket buffer bounds the rest);
* grow the daemon without bound with a multipart message that never ends: libzmq keeps the
  frames of an unfinished message and counts them nowhere, so a watchdog thread reads this
  process's RSS every :data:`WATCHDOG_PERIOD_S` (more often once it grows) and, past
  :data:`FLOOD_RSS_BYTES` above the baseline, shuts down every client connection itself
  (``shutdown(2)`` on the kernel sockets libzmq accepted: no zmq socket changes threads, and
  nothing waits for the loop thread), and the loop closes and re-binds the request sockets once
  libzmq has freed what they held; legitimate clients reconnect by themselves (a request in
  flight then times out). Growth that complete requests explain (up to
  :data:`REQUEST_MEMORY_FACTOR` times their size: many big job specs) moves the baseline
  instead, so a busy node is not mistaken for a flood.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import zmq

from agentd.kernel import procfs
from agentd.protocol import MAX_MESSAGE_BYTES, encode, topic_of
from agentd.protocol.messages import StreamMsg
from agentd.transport.auth import (
    UNVERIFIED,
    ZapHandler,
    authorize_own_client_key,
    authorized_keys,
    is_loopback,
    keys_signature,
    load_or_create_keypair,
)
from agentd.transport.peers import client_connection_inodes

log = logging.getLogger(__name__)
REPLY_HWM = 8  # replies queued per peer beyond the kernel's buffer; more are dropped
STREAM_HWM = 1000  # stream messages queued per subscriber (shared between subscribers)
# A flood at loopback speed (~600 MiB/s) grows the daemon by about FLOOD_RSS_BYTES plus what
# arrives in one WATCHDOG_PERIOD_S and in the loop's reaction time: ~50 MiB at worst.
FLOOD_RSS_BYTES = 12 << 20
WATCHDOG_PERIOD_S = 0.03  # ~30 µs of CPU a look (thread wake-up included): 0.1 % of a core
WATCHDOG_ALERT_S = 0.005  # once memory grows, look closely
WATCHDOG_ALERT_BYTES = 4 << 20
SETTLE_S = 0.5
REQUEST_MEMORY_FACTOR = 4  # a request may cost the daemon this many times its size, kept
KEYS_CHECK_S = 0.25
_PAGE = os.sysconf("SC_PAGE_SIZE")


class BindError(RuntimeError):
    """A socket could not be bound; the message names the endpoint and the likely cause."""


@dataclass(frozen=True)
class Incoming:
    """One request as received: reply address, body, and the verified peer id.

    ``peer`` is ``unix:UID:ipc|tcp`` (the kernel named the caller), ``key:Z85`` (an authorised CURVE
    key) or ``unverified``; ``via`` is ``local`` (the ipc socket) or ``ctl``.
    """

    identity: bytes
    body: bytes | memoryview
    peer: str
    via: str = "ctl"


def rss_bytes() -> int:
    """This process's resident set size, from /proc/self/statm (0 where it cannot be read)."""
    return (procfs.read_resident_pages("self") or 0) * _PAGE


def _fixed_mmap_threshold() -> None:
    """Serve big allocations (message frames) from mmap, so freeing them lowers RSS at once:
    glibc otherwise raises its threshold after the first free and keeps them in the heap."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 256 << 10)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _malloc_trim() -> None:
    """Give freed heap back to the kernel (glibc), so RSS shows what a flood left behind."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class DaemonSockets:
    """Owns the request/stream sockets of one daemon; call every method from one thread only,
    except :meth:`reply_later` and :meth:`wake`, which any thread may call."""

    def __init__(self, ctl: str, pub: str, state_dir: Path, *, local: str | None = None,
                 require_curve: bool | None = None) -> None:
        _fixed_mmap_threshold()
        self.ctx = zmq.Context()
        self.secure = require_curve if require_curve is not None else not (is_loopback(ctl) and is_loopback(pub))
        self.keys_root = state_dir / "authorized_keys"
        self.endpoints = {"ctl": ctl, "pub": pub}
        if local and local != ctl:
            self.endpoints["local"] = local
        self._keys: tuple[bytes, bytes] | None = None
        self._replies: queue.SimpleQueue[tuple[bytes, bytes]] = queue.SimpleQueue()
        self._wake_addr = f"inproc://wake-{id(self)}"
        self._wake_lock = threading.Lock()
        self.dropped_frames = 0
        self.rebuilds = 0
        self.routers: dict[str, zmq.Socket[bytes]] = {}
        self.zap: ZapHandler | None = None
        self._watchdog_stop = threading.Event()
        self.floods = 0
        self._flood = threading.Event()
        self._flood_cut = 0
        self.request_bytes = 0  # of every complete request received: what explains growth
        self._request_bytes_at_base = 0
        # Held by the loop thread while it uses the request sockets (polling included), and by
        # the watchdog only when free: see _free_cut_connections.
        self._routers_lock = threading.Lock()
        try:
            if self.secure:
                self._check_keys(state_dir)
                if authorize_own_client_key(state_dir):  # after the check: it needs a real client key
                    log.info("authorised this node's own client key as a peer daemon (authorized_keys/daemon/this-node.key)")
            self.zap = ZapHandler(self.ctx, self.keys_root, {})
            for name in self.endpoints:
                if name != "pub":
                    self.routers[name] = self._router(name)
            self.pub = self._socket(zmq.PUB, "pub", secure=self.secure)
            self.pub.setsockopt(zmq.SNDHWM, STREAM_HWM)
            self._bind(self.pub, pub, "stream (--pub)")  # close() closes self.pub on failure
            self.wake_rx = self.ctx.socket(zmq.PULL)
            self.wake_rx.bind(self._wake_addr)
            self._wake_tx = self.ctx.socket(zmq.PUSH)
            self._wake_tx.setsockopt(zmq.LINGER, 0)
            self._wake_tx.connect(self._wake_addr)
        except Exception:
            self.close()
            raise
        for name, sock in self.routers.items():  # a re-bind must get the same port as the first
            self.endpoints[name] = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.ctl_endpoint = self.endpoints["ctl"]
        self.pub_endpoint = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.local_endpoint = self.endpoints.get("local", "")
        self.zap.domains.update({name: _port(self.routers[name]) for name in self.routers})
        self.zap.domains["pub"] = _port(self.pub)
        self._tcp_ports = {p for p in (_port(sock) for sock in self.routers.values()) if p}
        self._unix_paths = {e[len("ipc://"):] for e in self.endpoints.values() if e.startswith("ipc://")}
        self._poller()
        self._keys_seen: tuple[object, set[bytes]] = ((), set())
        self._keys_checked = 0.0
        self._rss_base = 0  # taken at the first poll, once the daemon has finished starting
        self._own_until = 0.0  # monotonic time until which growth is the daemon's own (own_growth)
        self._watchdog = threading.Thread(target=self._watch_rss, name="agentd-rss-watchdog", daemon=True)
        self._watchdog.start()

    @property
    def server_key(self) -> str:
        """The CURVE public key clients must name (z85 text); "" when the daemon runs without CURVE."""
        return self._keys[0].decode("ascii") if self.secure and self._keys else ""

    # ---- set-up ------------------------------------------------------------------------
    def _check_keys(self, state_dir: Path) -> None:
        self._keys = load_or_create_keypair(state_dir / "keys", "server")
        if not authorized_keys(self.keys_root):
            raise BindError(
                f"refusing to listen on a non-loopback address with no authorized client keys in {self.keys_root}; "
                f"add one with `agentctl keys authorize --state-dir {state_dir} --role operator NAME KEYFILE` "
                f"(server public key: {state_dir / 'keys' / 'server.key'})"
            )

    def _socket(self, kind: int, domain: str, secure: bool) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        sock.zap_domain = domain.encode()  # every connection passes the ZAP handler, NULL ones too
        if secure:
            assert self._keys is not None
            sock.curve_server = True
            sock.curve_publickey, sock.curve_secretkey = self._keys
        return sock

    def _router(self, name: str, retry_s: float = 0.0) -> zmq.Socket[bytes]:
        endpoint = self.endpoints[name]
        sock = self._socket(zmq.ROUTER, name, secure=self.secure and name == "ctl")
        sock.setsockopt(zmq.SNDHWM, REPLY_HWM)
        if endpoint.startswith("ipc://"):
            path = Path(endpoint[len("ipc://"):])
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.unlink(missing_ok=True)  # a socket file left by a daemon that died
            except OSError as exc:
                sock.close(linger=0)
                raise BindError(f"cannot prepare the local socket {path}: {exc.strerror}; pass --local-socket PATH") from None
        try:
            self._bind(sock, endpoint, "request (--ctl)" if name == "ctl" else "local (--local-socket)", retry_s)
        except BindError:
            sock.close(linger=0)
            raise
        if endpoint.startswith("ipc://"):
            # Every local user may connect; the kernel tells who they are (peer credentials).
            os.chmod(endpoint[len("ipc://"):], 0o666)
        return sock

    def _poller(self) -> None:
        self.poller = zmq.Poller()
        for sock in self.routers.values():
            self.poller.register(sock, zmq.POLLIN)
        self.poller.register(self.wake_rx, zmq.POLLIN)

    @staticmethod
    def _bind(sock: zmq.Socket[bytes], endpoint: str, what: str, retry_s: float = 0.0) -> None:
        deadline = time.monotonic() + retry_s
        while True:
            try:
                sock.bind(endpoint)
                return
            except zmq.ZMQError as exc:
                # A socket closed a moment ago (a re-bind) frees its port in libzmq's I/O thread.
                if exc.errno == zmq.EADDRINUSE and time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                hint = ("another agentd (or program) uses that port; pick another with" if exc.errno == zmq.EADDRINUSE
                        else "check the address in")
                raise BindError(f"cannot bind the {what} socket to {endpoint}: {exc.strerror}; {hint} {what.split()[-1]}") from None

    # ---- guards ------------------------------------------------------------------------
    def own_growth(self, hold_s: float = 0.0) -> None:
        """Another part of this daemon (a relay's links, their snapshots) grows its memory on
        purpose, now and for ``hold_s`` more seconds: the flood guard takes the RSS as its
        baseline until then, so that growth is not read as a flood of requests (which cuts
        every client). Any thread."""
        self._own_until = max(self._own_until, time.monotonic() + hold_s)
        if self._rss_base:
            self._rss_base = max(self._rss_base, rss_bytes())

    def _watch_rss(self) -> None:
        # Cheap on purpose (it runs 50 times a second): a plain sleep, one pread of an open file.
        statm = os.open(os.path.join(procfs.DEFAULT_PROC_ROOT, "self", "statm"), os.O_RDONLY)
        period = WATCHDOG_PERIOD_S
        try:
            while not self._watchdog_stop.is_set():
                time.sleep(period)
                pages = procfs.statm_resident_pages(os.pread(statm, 64, 0)) or 0
                if self._rss_base and time.monotonic() < self._own_until:  # see own_growth
                    self._rss_base = max(self._rss_base, pages * _PAGE)
                grown = pages * _PAGE - self._rss_base if self._rss_base else 0
                period = self._check_flood(grown)
        except OSError:
            return
        finally:
            os.close(statm)

    def _check_flood(self, grown: int) -> float:
        """React to ``grown`` bytes of RSS over the baseline; the period until the next look."""
        if grown > FLOOD_RSS_BYTES and not self._flood.is_set():
            # Growth that complete requests explain (big job specs, many jobs) is the daemon's
            # own: it becomes the new baseline. What they do not explain is a flood.
            explained = REQUEST_MEMORY_FACTOR * (self.request_bytes - self._request_bytes_at_base)
            if grown <= FLOOD_RSS_BYTES + explained:
                self._rss_base += grown
                self._request_bytes_at_base = self.request_bytes
                return WATCHDOG_PERIOD_S
        if grown > FLOOD_RSS_BYTES or self._flood.is_set():
            # Stop the inflow now, from this thread, and keep cutting whoever reconnects
            # until the loop thread has closed the sockets, freed what they held and re-bound.
            self._flood_cut += cut_connections(client_connection_inodes(self._tcp_ports, self._unix_paths))
            self._free_cut_connections()
            if not self._flood.is_set():
                self._flood.set()
                self.wake()
        return WATCHDOG_ALERT_S if grown > WATCHDOG_ALERT_BYTES else WATCHDOG_PERIOD_S

    def _free_cut_connections(self) -> None:
        """Let the request sockets process libzmq's commands (the cut connections' ends), which
        frees what those connections held, when the loop thread is busy elsewhere (a tick). The
        lock hands the sockets over between threads with the full fence libzmq asks for."""
        if self._routers_lock.acquire(blocking=False):
            try:
                for sock in self.routers.values():
                    sock.getsockopt(zmq.EVENTS)
            finally:
                self._routers_lock.release()

    def _guard(self, now: float) -> None:
        """After a flood: close the request sockets, wait for libzmq to free what they held, and
        re-bind them (nobody reconnects in between). After a key was removed: re-bind every
        socket. Takes the RSS baseline once the daemon has started."""
        if not self._rss_base:
            self._rss_base = rss_bytes()
            self._request_bytes_at_base = self.request_bytes
        if self._flood.is_set():
            grown = rss_bytes() - self._rss_base
            self.rebuild(f"memory grew {grown >> 20} MiB with no complete request to show for it (a multipart "
                         f"message that never ends?); {self._flood_cut} connections were cut at once",
                         stream=False, settle=True)
            # What is still resident after that is the daemon's own (jobs, history).
            self._rss_base = max(self._rss_base, rss_bytes())
            self._request_bytes_at_base = self.request_bytes
            self.floods += 1
            self._flood_cut = 0
            self._flood.clear()
        if now - self._keys_checked >= KEYS_CHECK_S:
            self._keys_checked = now
            sig = keys_signature(self.keys_root)
            accepted = self.zap.accepted_keys() if self.zap is not None and self.secure else set()
            if (sig, accepted) != self._keys_seen:
                self._keys_seen = (sig, accepted)
                # A key that connected and is no longer authorised: cut every connection.
                gone = accepted - set(authorized_keys(self.keys_root))
                if gone and self.zap is not None:
                    names = ", ".join(sorted(k.decode()[:8] + "…" for k in gone))
                    self.rebuild(f"authorized key(s) removed: {names}", stream=True)
                    self.zap.forget_accepted()

    def rebuild(self, why: str, stream: bool, settle: bool = False) -> None:
        """Close and re-bind the request sockets (and the stream's with ``stream``): every
        connection is cut; clients reconnect and pass the ZAP handler again. With ``settle``,
        wait (at most :data:`SETTLE_S`) until the memory the closed sockets held is free."""
        self.rebuilds += 1
        log.warning("cutting every client connection: %s", why)
        for sock in self.routers.values():
            sock.close(linger=0)
        deadline = time.monotonic() + (SETTLE_S if settle else 0.0)
        while time.monotonic() < deadline:
            _malloc_trim()
            if rss_bytes() - self._rss_base < FLOOD_RSS_BYTES // 2:
                break
            time.sleep(0.005)
        for name in self.routers:
            self.routers[name] = self._router(name, retry_s=2.0)
        if stream:
            self.pub.close(linger=0)
            self.pub = self._socket(zmq.PUB, "pub", secure=self.secure)
            self.pub.setsockopt(zmq.SNDHWM, STREAM_HWM)
            self._bind(self.pub, self.pub_endpoint, "stream (--pub)", retry_s=2.0)
        self._poller()

    # ---- traffic -----------------------------------------------------------------------
    def poll(self, timeout_ms: int, now: float = 0.0) -> list[Incoming]:
        """Wait up to ``timeout_ms`` and return every request now waiting (drained fully)."""
        with self._routers_lock:
            return self._poll(timeout_ms, now)

    def _poll(self, timeout_ms: int, now: float) -> list[Incoming]:
        events = dict(self.poller.poll(min(timeout_ms, int(KEYS_CHECK_S * 1000))))
        if self.wake_rx in events:
            while True:
                try:
                    self.wake_rx.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
        self._guard(now or time.monotonic())
        out: list[Incoming] = []
        for name, sock in self.routers.items():
            tag = name[0].encode()
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                if len(frames) != 2:
                    # A DEALER sends [body]; anything else cannot be answered sensibly.
                    self.dropped_frames += 1
                    continue
                try:
                    user_id = frames[1].get("User-Id")  # a str for this property ("int | str" in general)
                    peer = user_id if isinstance(user_id, str) and user_id else UNVERIFIED
                except zmq.ZMQError:
                    peer = UNVERIFIED
                self.request_bytes += len(frames[1])
                # The body as a view of the frame: a 1 MiB checkpoint chunk is not copied to be decoded.
                out.append(Incoming(tag + frames[0].bytes, frames[1].buffer, peer, name))
        return out

    def send_reply(self, identity: bytes, reply: msgspec.Struct | bytes) -> None:
        body = reply if isinstance(reply, bytes) else encode(reply)
        sock = self.routers.get("local" if identity[:1] == b"l" else "ctl")
        if sock is None:
            return
        try:
            with self._routers_lock:
                sock.send_multipart([identity[1:], body], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the client went away, or stopped reading; nothing to tell it
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
            except (zmq.ZMQError, AttributeError):
                pass

    def flush_replies(self) -> None:
        while True:
            try:
                identity, body = self._replies.get_nowait()
            except queue.Empty:
                return
            self.send_reply(identity, body)

    def close(self) -> None:
        self._watchdog_stop.set()
        for sock in self.routers.values():
            sock.close(linger=0)
        for name in ("pub", "wake_rx", "_wake_tx"):
            other = getattr(self, name, None)  # absent when __init__ failed half way
            if other is not None:
                other.close(linger=0)
        if self.zap is not None:
            self.zap.stop()
        self.ctx.term()
        local = self.endpoints.get("local", "")
        if local.startswith("ipc://"):
            Path(local[len("ipc://"):]).unlink(missing_ok=True)


def cut_connections(inodes: set[int]) -> int:
    """``shutdown(2)`` every socket of this process whose inode is in ``inodes``; the count.

    The fd is duplicated and checked to still be that socket (libzmq may close and reuse an
    fd number between the listing and the cut); the shutdown reaches libzmq's own descriptor.
    """
    cut = 0
    for num in procfs.list_fds("self") or ():
        target = procfs.fd_target("self", num)
        if target is None or not target.startswith("socket:[") or int(target[8:-1]) not in inodes:
            continue
        try:
            fd = os.dup(num)
        except OSError:
            continue
        try:
            if os.fstat(fd).st_ino == int(target[8:-1]):
                with socket.socket(fileno=fd) as s:
                    fd = -1
                    s.shutdown(socket.SHUT_RDWR)
                    cut += 1
        except OSError:
            pass
        finally:
            if fd >= 0:
                os.close(fd)
    return cut


def _port(sock: zmq.Socket[bytes]) -> int:
    """The TCP port a socket is bound to (0 for ipc)."""
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    if endpoint.startswith("tcp://"):
        return int(endpoint.rsplit(":", 1)[1])
    return 0
