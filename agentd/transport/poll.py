"""Wait on many clients' sockets and plain file descriptors at once, from one thread.

A program that follows several daemons (the app's network worker, ``agentctl record``) owns
one :class:`~agentd.transport.client.NodeLink` and/or
:class:`~agentd.transport.client.NodeClient` per node and needs to sleep until any of them,
or one of its own file descriptors (a wake-up pipe for commands from another thread), has
something to read. :func:`wait_ready` does that without the caller touching zmq.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import zmq

from agentd.transport.errors import ClientError

__all__ = ["Pollable", "Ready", "wait_ready"]


class Pollable(Protocol):
    """Anything that can list the sockets it reads (NodeLink, NodeClient)."""

    def sockets(self) -> list[zmq.Socket[Any]]: ...


@dataclass(frozen=True)
class Ready:
    """What :func:`wait_ready` found readable. ``sockets`` is opaque to callers: pass the whole
    Ready to ``NodeLink.handle``; ``fds`` are the caller's own descriptors that are readable."""

    sockets: frozenset[object] = field(default_factory=frozenset)
    fds: frozenset[int] = field(default_factory=frozenset)

    def __contains__(self, item: object) -> bool:
        return item in self.sockets


def wait_ready(pollables: Iterable[Pollable], timeout_s: float, fds: Iterable[int] = ()) -> Ready:
    """Wait up to ``timeout_s`` seconds until a socket of ``pollables`` or one of ``fds`` is
    readable. Raises ClientError (a one-line message) when polling itself fails."""
    poller = zmq.Poller()
    n = 0
    for p in pollables:
        for s in p.sockets():
            poller.register(s, zmq.POLLIN)
            n += 1
    for fd in fds:
        poller.register(fd, zmq.POLLIN)
        n += 1
    if n == 0:  # zmq_poll with no items returns at once; keep the promise to wait
        time.sleep(max(0.0, timeout_s))
        return Ready()
    try:
        events = poller.poll(max(0, int(timeout_s * 1000)))
    except zmq.ZMQError as exc:
        raise ClientError(f"waiting for the network failed: {exc}") from None
    return Ready(frozenset(s for s, _ in events if not isinstance(s, int)),
                 frozenset(s for s, _ in events if isinstance(s, int)))
