"""Run a :class:`~agentd.simulate.fleet.SimNode` fleet on one thread and write its cluster file."""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path

from agentd.clusterfile import ClusterNode, dump_cluster
from agentd.simulate.fleet import SimNode
from agentd.transport.fleet_sockets import FleetSockets

log = logging.getLogger(__name__)


class Fleet:
    """K simulated nodes, each on its own loopback ROUTER and PUB; one thread runs them all.
    Sample ticks are spread over the interval, so the fleet's work is even, not a burst."""

    def __init__(self, k: int, *, prefix: str = "sim", gpus: int = 8, role: str = "operator", seed: int = 0,
                 failures: float = 0.0, interval_s: float = 1.0, host: str = "127.0.0.1",
                 alert_rate: float = 0.001) -> None:
        if k < 1:
            raise ValueError(f"a fleet of {k} nodes: give at least 1")
        self.interval_s = interval_s
        self.failures = failures
        self.socks = FleetSockets(host)
        width = max(4, len(str(k)))
        self.nodes: list[SimNode] = []
        for i in range(k):
            idx = self.socks.add()
            self.nodes.append(SimNode(name=f"{prefix}-{i + 1:0{width}d}", index=i, ctl=self.socks.ctl[idx],
                                      pub=self.socks.pub_endpoints[idx], gpus=gpus, role=role,
                                      rng=random.Random(seed * 1_000_003 + i), alert_rate=alert_rate))
        self._stop = threading.Event()

    def cluster_toml(self, name: str = "simulated fleet") -> str:
        """A cluster file listing every simulated node (what a relay or the app follows)."""
        return dump_cluster([ClusterNode(name=n.name, endpoint=n.ctl, labels={"simulated": "true",
                                                                             "rack": n.inventory.labels["rack"]})
                             for n in self.nodes], name=name)

    def write_cluster(self, path: Path, name: str = "simulated fleet") -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.cluster_toml(name))
        tmp.replace(path)  # a reader never sees half a file

    def run(self) -> None:
        """Serve until :meth:`stop` (blocks; the calling thread owns every socket)."""
        k = len(self.nodes)
        start = time.monotonic()
        next_tick = [start + self.interval_s * i / k for i in range(k)]
        for n in self.nodes:
            n.start()
        try:
            while not self._stop.is_set():
                for i, identity, body in self.socks.poll(0.02):
                    reply = self.nodes[i].handle(body)
                    if reply is not None:
                        self.socks.reply(i, identity, reply)
                mono, wall = time.monotonic(), time.time()
                for i, n in enumerate(self.nodes):
                    if mono >= next_tick[i]:
                        n.tick(mono, wall, self.failures)
                        next_tick[i] += self.interval_s
                        if next_tick[i] < mono:
                            next_tick[i] = mono + self.interval_s
                    else:
                        n.heartbeat(mono)
                    if n.outbox:
                        for topic, body in n.outbox:
                            self.socks.publish(i, topic, body)
                        n.outbox.clear()
        finally:
            self.socks.close()

    def stop(self) -> None:
        self._stop.set()
