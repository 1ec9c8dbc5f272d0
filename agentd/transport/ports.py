"""Choosing a port for a socket that will listen later (a daemon started next, a rendezvous).

A port from the kernel's ephemeral range is a trap: until the listener binds it, any client
retrying a connect to it (a ZeroMQ client does, every few ms) may get that very port as its own
local port and connect to itself (TCP simultaneous open); the listener then fails with "address
already in use". Ports below the ephemeral range are never handed to connecting sockets.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_BELOW_SPAN = 12000  # how far below the ephemeral range to look
# Ports handed out by this process: one that starts many daemons picks each port before any
# binds, and a random pick must not hand the same free port out twice.
_handed_out: set[int] = set()
_lock = threading.Lock()


def free_listen_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now, below the ephemeral range where there is room; on a
    crowded host, any free port."""
    try:
        low = int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    for _ in range(200):
        port = random.randrange(max(1024, low - _BELOW_SPAN), max(1025, low))
        with _lock, socket.socket() as s:
            if port in _handed_out:
                continue
            try:
                s.bind((host, port))
            except OSError:
                continue
            _handed_out.add(port)
            return port
    with socket.socket() as s:
        s.bind((host, 0))
        port_any: int = s.getsockname()[1]
        return port_any
