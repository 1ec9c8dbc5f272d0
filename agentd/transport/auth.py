"""CURVE keys and client authorisation for daemons on non-loopback addresses.

Layout of a daemon's state dir::

    keys/server.key            public certificate (give this to clients: their server_key)
    keys/server.key_secret     secret certificate (never leaves the node)
    authorized_keys/operator/NAME.key   client public certificates allowed to control
    authorized_keys/viewer/NAME.key     client public certificates allowed to read
    authorized_keys/daemon/NAME.key     peer daemons allowed to send migrations

A client keeps its own pair in ``~/.config/fleetdeck/keys/client.key{,_secret}``; ``agentctl
keys show`` prints the public key to hand to an operator.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

log = logging.getLogger(__name__)
ROLES = ("viewer", "operator", "daemon")
_ENDPOINT_RE = re.compile(r"^(tcp)://(\[[^\]]+\]|[^:/]+):(\d+|\*)$")


def endpoint_host(endpoint: str) -> str:
    """Host part of a ``tcp://HOST:PORT`` endpoint; ValueError naming the endpoint otherwise."""
    m = _ENDPOINT_RE.match(endpoint)
    if not m:
        if endpoint.startswith(("ipc://", "inproc://")):
            return "localhost"
        raise ValueError(f"endpoint {endpoint!r} is not of the form tcp://HOST:PORT")
    return m.group(2).strip("[]")


def is_loopback(endpoint: str) -> bool:
    """True when the endpoint only reaches this machine (127.0.0.0/8, ::1, localhost, ipc)."""
    host = endpoint_host(endpoint)
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or '*': treat as reachable from outside


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


def client_keys_dir() -> Path:
    import platformdirs

    return Path(os.environ.get("FLEETDECK_KEYS_DIR") or Path(platformdirs.user_config_dir("fleetdeck")) / "keys")


def authorized_keys(root: Path) -> dict[bytes, str]:
    """Map of z85 public key -> "role:name" from ``root/<role>/*.key``."""
    out: dict[bytes, str] = {}
    for role in ROLES:
        d = root / role
        if not d.is_dir():
            continue
        for f in sorted(d.glob("*.key")):
            try:
                public, _ = zmq.auth.load_certificate(str(f))
            except Exception as exc:  # one bad file must not lock everyone out
                log.warning("ignoring unreadable key file %s: %s", f, exc)
                continue
            out[public] = f"{role}:{f.stem}"
    return out


class _KeyDirectory:
    """ZAP credentials provider re-reading the authorized keys directory on every connect."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def callback(self, domain: str, key: bytes) -> bool:
        ok = key in authorized_keys(self.root)
        if not ok:
            log.warning("refused CURVE client key %s: not in %s", key.decode(), self.root)
        return ok


def start_role_authenticator(context: zmq.Context, root: Path) -> Any:
    """Start a ZAP handler that accepts the keys under ``root`` and names each client ``role:name``.

    Returns the started ``zmq.auth.thread.ThreadAuthenticator`` (call ``.stop()``). It is
    imported here, not at module level, because it pulls in asyncio (about 5 MiB of RSS) that
    a daemon listening on loopback only, the common case, never needs.
    """
    from zmq.auth.thread import ThreadAuthenticator

    class RoleAuthenticator(ThreadAuthenticator):
        def curve_user_id(self, client_public_key: bytes) -> str:
            import zmq.utils.z85 as z85

            return authorized_keys(root).get(z85.encode(client_public_key), "viewer:unknown")

    auth = RoleAuthenticator(context)
    auth.configure_curve_callback("*", _KeyDirectory(root))
    auth.start()
    return auth
