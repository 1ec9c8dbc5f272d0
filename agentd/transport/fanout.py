"""Hundreds of NodeLinks on one thread: what a relay follows its nodes with.

:class:`LinkPool` is :class:`~agentd.transport.client.LinkSet` for many links: one zmq context
(with room for thousands of sockets), one poller kept across calls (registered sockets change
only when a link reconnects), and only the links with a ready socket handle it; every link's
timers (stale, retry) still run a few times a second. One thread owns the pool; requests from
other threads use :meth:`LinkPool.client`, a short-lived NodeClient of their own on the shared
context (creating a socket is thread-safe; using one is not).
"""

from __future__ import annotations

import logging
import resource
import time
from pathlib import Path

import zmq

from agentd.transport.client import LinkEvent, NodeClient, NodeLink

log = logging.getLogger(__name__)
TIMERS_EVERY_S = 0.25  # how often every link's timers run, ready or not
MAX_SOCKETS = 65536
# Stream messages a relay queues per followed node (a node sends a few a second). A relay that
# falls behind holds at most this many per node, and the link resyncs from a fresh snapshot,
# rather than libzmq growing the relay by gigabytes (2,500 links x the usual 10,000).
POOL_SUB_HWM = 100


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (two sockets per followed node,
    plus their connections); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft


class LinkPool:
    """NodeLinks by endpoint, polled together from the one thread that owns the pool."""

    def __init__(self, keys_dir: Path | None = None) -> None:
        raise_fd_limit()
        self.ctx = zmq.Context()
        self.ctx.set(zmq.MAX_SOCKETS, MAX_SOCKETS)
        self.keys_dir = keys_dir
        self.links: dict[str, NodeLink] = {}
        self._poller = zmq.Poller()
        self._registered: dict[zmq.Socket[bytes], NodeLink] = {}
        self._timers_at = 0.0

    def add(self, endpoint: str, server_key: str = "", history: int = 2, hello_timeout_s: float = 3.0) -> NodeLink:
        if endpoint not in self.links:
            link = NodeLink(endpoint, server_key=server_key or None, keys_dir=self.keys_dir,
                            history=history, hello_timeout_s=hello_timeout_s, ctx=self.ctx)
            link.sub_hwm = POOL_SUB_HWM
            self.links[endpoint] = link
        return self.links[endpoint]

    def client(self, endpoint: str, server_key: str = "", timeout_s: float = 10.0) -> NodeClient:
        """A NodeClient of the calling thread's own (close it when done)."""
        return NodeClient(endpoint, server_key=server_key or None, keys_dir=self.keys_dir, timeout_s=timeout_s, ctx=self.ctx)

    def _sync_poller(self) -> None:
        current: dict[zmq.Socket[bytes], NodeLink] = {}
        for link in self.links.values():
            for s in link.sockets():
                current[s] = link
        for s in [s for s in self._registered if s not in current]:
            try:
                self._poller.unregister(s)
            except KeyError:
                pass
        for s in current:
            if s not in self._registered:
                self._poller.register(s, zmq.POLLIN)
        self._registered = current

    def poll(self, timeout_s: float) -> list[LinkEvent]:
        """Wait up to ``timeout_s`` and return what the links yielded."""
        self._sync_poller()
        if self._registered:
            ready = [s for s, _ in self._poller.poll(max(0, int(timeout_s * 1000)))]
        else:
            # zmq_poll over no sockets returns at once: sleep instead, or an idle pool (the
            # radar of a node that leads no group, links all waiting to reconnect) spins a core.
            time.sleep(max(0.0, timeout_s))
            ready = []
        now = time.monotonic()
        out: list[LinkEvent] = []
        by_link: dict[int, tuple[NodeLink, list[zmq.Socket[bytes]]]] = {}
        for s in ready:
            link = self._registered.get(s)
            if link is not None:
                by_link.setdefault(id(link), (link, []))[1].append(s)
        if now >= self._timers_at:
            self._timers_at = now + TIMERS_EVERY_S
            for link in self.links.values():
                out.extend(link.handle(by_link.pop(id(link), (link, []))[1], now))
        for link, socks in by_link.values():
            out.extend(link.handle(socks, now))
        return out

    def close(self) -> None:
        for link in self.links.values():
            link.close()
        self.links.clear()
        self._registered.clear()
        self.ctx.term()
