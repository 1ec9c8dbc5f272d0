"""CURVE keys, client authorisation, and the ZAP handler that names every caller.

Layout of a daemon's state dir::

    keys/server.key            public certificate (give this to clients: their server_key)
    keys/server.key_secret     secret certificate (never leaves the node)
    authorized_keys/<role>/NAME.key   client public certificates; <role> is one of
                               viewer, user, operator, admin (people) or daemon (peer daemons:
                               migration verbs only). A key file may carry ``user = "alice"`` in
                               its ``metadata`` section: the Unix user its holder acts as.

A client keeps its own pair in ``~/.config/fleetdeck/keys/client.key{,_secret}``; ``agentctl
keys show`` prints the public key to hand to an admin.

Every connection to a daemon passes the ZAP handler here, which gives it a verified peer id that
libzmq attaches to each message (``User-Id``): ``unix:UID:ipc`` or ``unix:UID:tcp`` when the
kernel vouches for the caller (ipc peer credentials, or the loopback TCP table), ``key:Z85`` for an authorised CURVE
key, ``unverified`` otherwise. What the id may do is decided per request by the daemon, so a key
removed from disk stops working at its next request.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from agentd.transport.peers import parse_ipc_peer, tcp_peer_uid

log = logging.getLogger(__name__)
ROLES = ("viewer", "user", "operator", "admin", "daemon")
UNVERIFIED = "unverified"
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_ENDPOINT_RE = re.compile(r"^(tcp)://(\[[^\]]+\]|[^:/]+):(\d+|\*)$")
_USER_RE = re.compile(rb'^\s*user\s*=\s*"?([A-Za-z0-9_][A-Za-z0-9_.-]{0,31})"?\s*$')


@dataclass(frozen=True)
class AuthorizedKey:
    """One file under ``authorized_keys/<role>/``: who holds the key and what it may do."""

    role: str
    name: str
    user: str | None  # the Unix user the key acts as; None: it cannot submit jobs
    path: Path


def endpoint_host(endpoint: str) -> str:
    """Host part of a ``tcp://HOST:PORT`` endpoint; ValueError naming the endpoint otherwise."""
    m = _ENDPOINT_RE.match(endpoint)
    if not m:
        if endpoint.startswith(("ipc://", "inproc://")):
            return "localhost"
        raise ValueError(f"endpoint {endpoint!r} is not of the form tcp://HOST:PORT")
    return m.group(2).strip("[]")


def is_loopback_host(host: str) -> bool:
    """True when ``host`` (an address or ``localhost``) only reaches this machine
    (127.0.0.0/8, ::1); a host name or ``*`` counts as reachable from outside."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback(endpoint: str) -> bool:
    """True when the endpoint only reaches this machine (loopback TCP, ipc)."""
    return is_loopback_host(endpoint_host(endpoint))


def connect_address(endpoint: str) -> str:
    """The address a client connects to ``endpoint`` with.

    For a loopback TCP daemon: from a random ``127.x.y.z`` source address, so the daemon can
    name the caller from the kernel's TCP table without confusing it with another user's
    connection from ``127.0.0.1`` (see :mod:`agentd.transport.peers`). Anything else as given.
    """
    m = _ENDPOINT_RE.match(endpoint)
    if not m or m.group(3) == "*":
        return endpoint
    host = m.group(2)
    if host == "localhost":
        host = "127.0.0.1"
    try:
        if not (ipaddress.ip_address(host).version == 4 and ipaddress.ip_address(host).is_loopback):
            return endpoint
    except ValueError:
        return endpoint
    a, b, c = secrets.randbelow(256), secrets.randbelow(256), 1 + secrets.randbelow(254)
    return f"tcp://127.{a}.{b}.{c}:0;{host}:{m.group(3)}"


def load_or_create_keypair(directory: Path, name: str) -> tuple[bytes, bytes]:
    """(public, secret) z85 keys from ``directory/name.key_secret``, created on first use."""
    directory.mkdir(parents=True, exist_ok=True)
    secret_file = directory / f"{name}.key_secret"
    if not secret_file.exists():
        os.chmod(directory, 0o700)
        zmq.auth.create_certificates(str(directory), name)
        os.chmod(secret_file, 0o600)
    public, secret = zmq.auth.load_certificate(str(secret_file))
    assert secret is not None
    return public, secret


def load_public_key(path_or_key: str) -> bytes:
    """A server/client public key given as a z85 string or as a path to a ``.key`` file."""
    p = Path(path_or_key).expanduser()
    if len(path_or_key) == 40 and not p.exists():
        return path_or_key.encode()
    if not p.exists():
        raise ValueError(f"server key {path_or_key!r} is neither a 40-character z85 key nor an existing file")
    public, _ = zmq.auth.load_certificate(str(p))
    return public


def public_key_text(path_or_key: str) -> str:
    """The z85 text of a public key given as text or as a ``.key`` file ("" stays ""): what a
    client sends a daemon, which must not be asked to read a path that exists only here."""
    return load_public_key(path_or_key).decode("ascii") if path_or_key else ""


def client_keys_dir() -> Path:
    import platformdirs

    return Path(os.environ.get("FLEETDECK_KEYS_DIR") or Path(platformdirs.user_config_dir("fleetdeck")) / "keys")


def key_user(path: Path) -> str | None:
    """The ``user = "NAME"`` line of a certificate's metadata section, if any."""
    try:
        with open(path, "rb") as f:
            for line in f:
                m = _USER_RE.match(line)
                if m:
                    return m.group(1).decode()
    except OSError:
        return None
    return None


def authorized_keys(root: Path) -> dict[bytes, AuthorizedKey]:
    """Map of z85 public key -> its authorisation, from ``root/<role>/*.key``.

    A key found under several roles keeps the first in :data:`ROLES` order (the least).
    """
    out: dict[bytes, AuthorizedKey] = {}
    for role in ROLES:
        d = root / role
        if not d.is_dir():
            continue
        for f in sorted(d.glob("*.key")):
            try:
                public, _ = zmq.auth.load_certificate(str(f))
            except Exception as exc:  # noqa: BLE001 - one bad file must not lock everyone out
                log.warning("ignoring unreadable key file %s: %s", f, exc)
                continue
            out.setdefault(public, AuthorizedKey(role, f.stem, key_user(f), f))
    return out


def authorize_own_client_key(state_dir: Path) -> Path | None:
    """Give the daemon's own client key (``STATE_DIR/keys/client.key``, its identity towards
    peer daemons) the role ``daemon`` on this node too: the radar of a group this node leads
    follows this node over CURVE like every other member. Writes
    ``authorized_keys/daemon/this-node.key`` unless some file there already holds the key;
    returns the file written, or None."""
    public, _ = load_or_create_keypair(state_dir / "keys", "client")
    root = state_dir / "authorized_keys"
    held = authorized_keys(root).get(public)
    if held is not None and held.role == "daemon":
        return None
    path = root / "daemon" / "this-node.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# this node's own client key (agentd adds it; it lets the radar follow its own node)\n"
                    f"curve\n    public-key = \"{public.decode('ascii')}\"\n")
    return path


def keys_signature(root: Path) -> tuple[tuple[str, int, int], ...]:
    """A cheap fingerprint of the authorized keys on disk (names, sizes, mtimes)."""
    out = []
    for role in ROLES:
        try:
            with os.scandir(root / role) as it:
                for e in it:
                    if e.name.endswith(".key"):
                        st = e.stat()
                        out.append((f"{role}/{e.name}", st.st_size, st.st_mtime_ns))
        except OSError:
            continue
    return tuple(sorted(out))


class ZapHandler:
    """The ZAP handler of one daemon's context (one thread; started before any socket binds).

    ``domains`` maps each socket's ZAP domain to the TCP port it listens on (0 for ipc), so a
    loopback TCP caller can be looked up in the kernel's table. CURVE clients must hold a key
    under ``keys_root``; NULL clients are accepted and named by the kernel where it can.
    """

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], keys_root: Path, domains: dict[str, int]) -> None:
        self.keys_root = keys_root
        self.domains = domains
        self.refused = 0
        self._accepted: set[bytes] = set()  # CURVE keys let in since the last cut (see take_accepted)
        self._accepted_lock = threading.Lock()
        self._sock = context.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(ZAP_ENDPOINT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agentd-zap", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(500):
                continue
            try:
                frames = self._sock.recv_multipart()
            except zmq.ZMQError:
                return
            version, request_id = (frames + [b"", b""])[:2]
            try:
                status, text, user = self.decide(frames)
            except Exception:  # a bad request must not end the handler: refuse it
                log.exception("ZAP request could not be decided")
                status, text, user = b"500", b"internal error", b""
            if status != b"200":
                self.refused += 1
            self._sock.send_multipart([version, request_id, status, text, user, b""])
        self._sock.close(linger=0)

    def decide(self, frames: list[bytes]) -> tuple[bytes, bytes, bytes]:
        """(status, text, user id) for one ZAP request."""
        if len(frames) < 6:
            return b"400", b"malformed ZAP request", b""
        domain, address, mechanism = frames[2].decode(errors="replace"), frames[3].decode(errors="replace"), frames[5]
        if mechanism == b"CURVE":
            if len(frames) < 7 or len(frames[6]) != 32:
                return b"400", b"no CURVE key", b""
            import zmq.utils.z85 as z85

            key = z85.encode(frames[6])
            if key not in authorized_keys(self.keys_root):
                log.warning("refused CURVE client key %s from %s: not in %s", key.decode(), address, self.keys_root)
                return b"400", b"key not authorized", b""
            with self._accepted_lock:
                self._accepted.add(key)
            return b"200", b"OK", b"key:" + key
        if mechanism != b"NULL":
            return b"400", b"unsupported mechanism", b""
        return b"200", b"OK", self._unix_id(domain, address).encode()

    def _unix_id(self, domain: str, address: str) -> str:
        if address.startswith("localhost:"):
            peer = parse_ipc_peer(address)
            return f"unix:{peer.uid}:ipc" if peer is not None else UNVERIFIED
        port = self.domains.get(domain, 0)
        uid = tcp_peer_uid(address, port) if port else None
        return f"unix:{uid}:tcp" if uid is not None else UNVERIFIED

    def accepted_keys(self) -> set[bytes]:
        """The CURVE keys let in since the last :meth:`forget_accepted` (z85)."""
        with self._accepted_lock:
            return set(self._accepted)

    def forget_accepted(self) -> None:
        """Every connection was just cut: those keys must pass the handler again."""
        with self._accepted_lock:
            self._accepted.clear()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
