"""Many nodes' sockets on one thread: the fleet simulator's transport.

Each simulated node gets what a real agentd binds: a ROUTER for requests and a PUB for its
stream, on loopback TCP ports the kernel picks. One context and one poller serve them all; the
thread that made the :class:`FleetSockets` owns every socket in it. No CURVE: a simulator
listens on loopback only.
"""

from __future__ import annotations

import zmq

from agentd.protocol import MAX_MESSAGE_BYTES
from agentd.transport.fanout import MAX_SOCKETS, raise_fd_limit


class FleetSockets:
    """ROUTER + PUB per node index; :meth:`poll` yields ``(index, identity, body)``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        raise_fd_limit()
        self.host = host
        self.ctx = zmq.Context()
        self.ctx.set(zmq.MAX_SOCKETS, MAX_SOCKETS)
        self.routers: list[zmq.Socket[bytes]] = []
        self.pubs: list[zmq.Socket[bytes] | None] = []
        self.ctl: list[str] = []
        self.pub_endpoints: list[str] = []
        self._index: dict[zmq.Socket[bytes], int] = {}
        self.poller = zmq.Poller()

    def add(self) -> int:
        """Bind one more node's sockets; its index."""
        router = self.ctx.socket(zmq.ROUTER)
        pub = self.ctx.socket(zmq.PUB)
        for s in (router, pub):
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        router.bind(f"tcp://{self.host}:*")
        pub.bind(f"tcp://{self.host}:*")
        i = len(self.routers)
        self.routers.append(router)
        self.pubs.append(pub)
        self.ctl.append(router.getsockopt_string(zmq.LAST_ENDPOINT))
        self.pub_endpoints.append(pub.getsockopt_string(zmq.LAST_ENDPOINT))
        self._index[router] = i
        self.poller.register(router, zmq.POLLIN)
        return i

    def poll(self, timeout_s: float) -> list[tuple[int, bytes, bytes]]:
        out: list[tuple[int, bytes, bytes]] = []
        for sock, _ in self.poller.poll(max(0, int(timeout_s * 1000))):
            i = self._index.get(sock)
            if i is None:
                continue
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if len(frames) == 2:
                    out.append((i, frames[0], frames[1]))
        return out

    def reply(self, i: int, identity: bytes, body: bytes) -> None:
        try:
            self.routers[i].send_multipart([identity, body], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the client left

    def publish(self, i: int, topic: bytes, body: bytes) -> None:
        pub = self.pubs[i]
        if pub is None:
            return
        try:
            pub.send_multipart([topic, body], zmq.NOBLOCK)
        except zmq.Again:
            pass

    def close(self) -> None:
        for s in [*self.routers, *self.pubs]:
            if s is not None:
                s.close(linger=0)
        self.ctx.term()
