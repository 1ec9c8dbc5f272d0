"""NodeSet: every followed node's stream link and request client, owned by one thread.

The app's network worker follows many daemons at once: per node key one
:class:`~agentd.transport.client.NodeLink` (the stream: Clone pattern, staleness, reconnect)
and one :class:`~agentd.transport.client.NodeClient` (requests sent without waiting, matched
to their replies by id), all in one zmq context and waited on together with the caller's own
file descriptors. The caller sees node keys, typed link events (:mod:`agentd.protocol.link`),
request ids and replies; never a socket. Not thread-safe: one thread owns a NodeSet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from agentd.protocol.link import LinkEvent
from agentd.protocol.messages import ErrorReply, Reply, Request
from agentd.transport.client import NodeClient, NodeLink
from agentd.transport.poll import Ready, wait_ready

__all__ = ["NodeSet", "Polled"]
log = logging.getLogger(__name__)


@dataclass
class Polled:
    """What one :meth:`NodeSet.poll` brought: link events and replies by node key, which of
    the caller's file descriptors are readable, and per-node failures (key, message) of a link
    that could not be handled (the other nodes went on)."""

    events: list[tuple[str, LinkEvent]] = field(default_factory=list)
    replies: list[tuple[str, int, Reply | ErrorReply]] = field(default_factory=list)
    fds: frozenset[int] = frozenset()
    failures: list[tuple[str, str]] = field(default_factory=list)


class NodeSet:
    """Follow nodes by key; send requests; poll everything at once."""

    def __init__(self, keys_dir: Path | None = None) -> None:
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._keys_dir = keys_dir
        self.links: dict[str, NodeLink] = {}
        self.clients: dict[str, NodeClient] = {}

    def __contains__(self, key: object) -> bool:
        return key in self.links

    def add(self, key: str, endpoint: str, server_key: str | None = None) -> NodeLink:
        """Start following ``endpoint`` as ``key`` (the request connection opens at once, so
        the first request finds it). ValueError or ClientError for a bad endpoint or key."""
        if key in self.links:
            return self.links[key]
        link = NodeLink(endpoint, server_key=server_key, keys_dir=self._keys_dir, ctx=self._ctx)
        try:
            client = NodeClient(endpoint, server_key=server_key, keys_dir=self._keys_dir, ctx=self._ctx)
            client.connect()
        except Exception:
            link.close()
            raise
        self.links[key], self.clients[key] = link, client
        return link

    def remove(self, key: str) -> None:
        """Stop following ``key``; replies still awaited from it never arrive."""
        link = self.links.pop(key, None)
        if link is not None:
            link.close()
        client = self.clients.pop(key, None)
        if client is not None:
            client.close()

    def send(self, key: str, req: Request) -> int | None:
        """Send ``req`` to node ``key`` without blocking: its request id, or None while the
        node has no connection (try again). KeyError for an unknown key; ClientError when the
        socket failed (it reconnects on the next call)."""
        return self.clients[key].send_nowait(req)

    def give_up(self, key: str, req_id: int) -> None:
        """A request timed out: reconnect its node's request socket (lazy pirate), so a late
        reply can never be taken for the answer to a later request."""
        client = self.clients.get(key)
        if client is not None:
            client.forget(req_id)
            client.reset()

    def poll(self, timeout_s: float, fds: Iterable[int] = ()) -> Polled:
        """Wait up to ``timeout_s`` for any node or any of ``fds``, then take what arrived.
        ClientError when waiting itself failed."""
        ready = wait_ready([*self.links.values(), *self.clients.values()], timeout_s, fds)
        return self._take(ready)

    def _take(self, ready: Ready) -> Polled:
        out = Polled(fds=ready.fds)
        now = time.monotonic()
        for key, link in list(self.links.items()):
            try:
                out.events.extend((key, ev) for ev in link.handle(ready, now))
            except Exception as exc:
                log.exception("link %s failed", key)
                out.failures.append((key, f"stream handling failed: {exc}"))
        for key, client in self.clients.items():
            if client.sock is not None and client.sock in ready:
                out.replies.extend((key, req_id, reply) for req_id, reply in client.take_replies())
        return out

    def close(self) -> None:
        """Close every link and client and the context; idempotent."""
        for key in list(self.links):
            self.remove(key)
        if not self._ctx.closed:
            self._ctx.term()
