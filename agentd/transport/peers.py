"""Who is on the other end of a local connection, as the kernel says it.

Two sources, neither of which a client can forge:

* a Unix socket (``ipc://``): the peer's credentials (``SO_PEERCRED``), which libzmq hands to the
  ZAP handler as the address ``localhost:UID:GID:PID``;
* a loopback TCP connection: the owner of the client's socket in the kernel's TCP table
  (``/proc/net/tcp``), as identd does. libzmq only tells the ZAP handler the peer's IP, not its
  port, so the lookup takes every established connection from that IP to the daemon's port and
  answers only when all of them belong to one uid. Our clients connect from a random
  ``127.x.y.z`` source address, so the set is their own connection; a second user who connects
  from the same address on purpose makes the answer ambiguous, and an ambiguous caller gets
  viewer rights, never somebody else's.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
DEFAULT_PROC_ROOT = Path("/proc")
_TCP_ESTABLISHED = "01"


@dataclass(frozen=True)
class UnixPeer:
    """Kernel-verified credentials of a local peer."""

    uid: int
    gid: int
    pid: int


def parse_ipc_peer(address: str) -> UnixPeer | None:
    """``localhost:UID:GID:PID`` (libzmq's peer address of an ``ipc://`` connection) -> UnixPeer."""
    parts = address.rsplit(":", 3)
    if len(parts) != 4:
        return None
    try:
        return UnixPeer(int(parts[1]), int(parts[2]), int(parts[3]))
    except ValueError:
        return None


def _decode_addr(hex_addr: str) -> tuple[str, int]:
    """``0100007F:1E1E`` or the 32-hex-digit IPv6 form of /proc/net/tcp -> (ip, port)."""
    host, _, port = hex_addr.partition(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(host, 16)))
    else:
        words = struct.unpack("<4I", raw)
        ip = socket.inet_ntop(socket.AF_INET6, struct.pack(">4I", *words))
        mapped = ipaddress.IPv6Address(ip).ipv4_mapped
        if mapped is not None:
            ip = str(mapped)
    return ip, int(port, 16)


def _tcp_rows(proc_root: Path):
    """The fields of every established row of /proc/net/tcp and tcp6 (this network namespace)."""
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc_root / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) >= 10 and f[3] == _TCP_ESTABLISHED:
                yield f


def _established(proc_root: Path) -> list[tuple[tuple[str, int], tuple[str, int], int]]:
    """(local, remote, uid) of every established TCP socket in this network namespace."""
    out = []
    for f in _tcp_rows(proc_root):
        try:
            out.append((_decode_addr(f[1]), _decode_addr(f[2]), int(f[7])))
        except ValueError:
            continue
    return out


def client_connection_inodes(tcp_ports: set[int], unix_paths: set[str],
                             proc_root: Path = DEFAULT_PROC_ROOT) -> set[int]:
    """Socket inodes of the connections clients made to a server: established TCP sockets whose
    local port is one of ``tcp_ports``, and connected Unix stream sockets accepted on one of
    ``unix_paths`` (the kernel shows an accepted socket under its listener's path)."""
    inodes = {int(f[9]) for f in _tcp_rows(proc_root) if int(f[1].rsplit(":", 1)[1], 16) in tcp_ports}
    try:
        lines = (proc_root / "net" / "unix").read_text().splitlines()[1:]
    except OSError:
        lines = []
    for line in lines:
        f = line.split()
        # Num RefCount Protocol Flags Type St Inode [Path]
        if len(f) == 8 and f[4] == "0001" and f[5] == "03" and f[7] in unix_paths:
            inodes.add(int(f[6]))
    return inodes


def tcp_peer_uid(peer_ip: str, server_port: int, proc_root: Path = DEFAULT_PROC_ROOT) -> int | None:
    """The uid owning every client socket from ``peer_ip`` to ``server_port`` on this host.

    None when there is no such connection, when they belong to more than one uid, or when the
    peer is not on a loopback address (the kernel's table only vouches for local sockets).
    """
    try:
        if not ipaddress.ip_address(peer_ip).is_loopback:
            return None
    except ValueError:
        return None
    table = _established(proc_root)
    # The daemon's side of each connection: local port = server_port, remote = the peer.
    peer_ports = {remote[1] for local, remote, _ in table if local[1] == server_port and remote[0] == peer_ip}
    uids = {uid for local, remote, uid in table
            if local[0] == peer_ip and local[1] in peer_ports and remote[1] == server_port}
    if len(uids) == 1:
        return uids.pop()
    if len(uids) > 1:
        log.warning("connections from %s to port %d belong to several users %s: treating the caller as unverified",
                    peer_ip, server_port, sorted(uids))
    return None
