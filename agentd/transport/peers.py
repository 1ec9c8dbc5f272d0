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
from dataclasses import dataclass

from agentd.kernel.files import StrPath
from agentd.kernel.procfs import (
    DEFAULT_PROC_ROOT,
    read_tcp_established,
    read_unix_sockets,
)

log = logging.getLogger(__name__)


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


def client_connection_inodes(tcp_ports: set[int], unix_paths: set[str],
                             proc_root: StrPath = DEFAULT_PROC_ROOT) -> set[int]:
    """Socket inodes of the connections clients made to a server: established TCP sockets whose
    local port is one of ``tcp_ports``, and connected Unix stream sockets accepted on one of
    ``unix_paths`` (the kernel shows an accepted socket under its listener's path)."""
    inodes = {c.inode for c in read_tcp_established(proc_root) if c.local_port in tcp_ports}
    inodes.update(u.inode for u in read_unix_sockets(proc_root) if u.connected_stream and u.path in unix_paths)
    return inodes


def tcp_peer_uid(peer_ip: str, server_port: int, proc_root: StrPath = DEFAULT_PROC_ROOT) -> int | None:
    """The uid owning every client socket from ``peer_ip`` to ``server_port`` on this host.

    None when there is no such connection, when they belong to more than one uid, or when the
    peer is not on a loopback address (the kernel's table only vouches for local sockets).
    """
    try:
        if not ipaddress.ip_address(peer_ip).is_loopback:
            return None
    except ValueError:
        return None
    table = read_tcp_established(proc_root)
    # The daemon's side of each connection: local port = server_port, remote = the peer.
    peer_ports = {c.remote_port for c in table if c.local_port == server_port and c.remote_ip == peer_ip}
    uids = {c.uid for c in table
            if c.local_ip == peer_ip and c.local_port in peer_ports and c.remote_port == server_port}
    if len(uids) == 1:
        return uids.pop()
    if len(uids) > 1:
        log.warning("connections from %s to port %d belong to several users %s: treating the caller as unverified",
                    peer_ip, server_port, sorted(uids))
    return None
