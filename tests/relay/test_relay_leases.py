"""Follow leases are per client: one client's unfollow (or a second one) never stops another's
detail, a renewal is no second lease, and a lease ends by itself (real relay, simulated fleet)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import zmq

from agentd.protocol.codec import decode_stream
from agentd.protocol.messages import OkReply
from agentd.protocol.relay import (
    Follow,
    FollowReply,
    RelayedMsg,
    Unfollow,
    detail_topic,
)
from agentd.transport.client import NodeClient
from tests.relay.relay_helpers import relay, sim_fleet, wait_nodes

NODE = "sim-0002"


@contextmanager
def _detail_sub(pub: str) -> Iterator[zmq.Socket[bytes]]:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    try:
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, detail_topic(NODE))
        sub.connect(pub)
        time.sleep(0.3)  # the subscription reaches the relay first
        yield sub
    finally:
        sub.close(linger=0)
        ctx.term()


def _detail_within(sub: zmq.Socket[bytes], seconds: float) -> int:
    """How many detail messages of NODE arrive in the next ``seconds`` (the node samples at 1 Hz)."""
    got = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sub.poll(100):
            msg = decode_stream(sub.recv_multipart()[1])
            assert isinstance(msg, RelayedMsg) and msg.origin == NODE
            got += 1
    return got


def _quiet(sub: zmq.Socket[bytes]) -> bool:
    """Drain what was queued, then see that nothing more comes for 3 s."""
    _detail_within(sub, 0.5)
    return _detail_within(sub, 3.0) == 0


def test_one_clients_unfollow_never_stops_anothers_detail(tmp_path: Path) -> None:
    with sim_fleet(tmp_path, 3) as cluster, relay(tmp_path, cluster) as r:
        wait_nodes(r, 4)
        with NodeClient(r.ctl, timeout_s=20) as c:
            pub = c.hello().pub_endpoint
            with _detail_sub(pub) as sub:
                # Windows A and B follow the same node.
                for client in ("window-a", "window-b"):
                    assert isinstance(c.call(Follow(node=NODE, client=client)), FollowReply)
                assert _detail_within(sub, 3.0) > 0
                # A closes its view twice (a double close): B's detail keeps crossing.
                for _ in range(2):
                    reply = c.call(Unfollow(node=NODE, client="window-a"))
                    assert isinstance(reply, OkReply)
                assert "1 other lease" in reply.message
                _detail_within(sub, 0.5)
                assert _detail_within(sub, 3.0) > 0, "window-a's unfollow stopped window-b's detail"
                c.call(Unfollow(node=NODE, client="window-b"))
                assert _quiet(sub), "detail still crosses with no lease left"

                # A renews its lease (follows again): still one lease, which one unfollow ends.
                for _ in range(2):
                    c.call(Follow(node=NODE, client="window-a"))
                assert _detail_within(sub, 2.0) > 0
                c.call(Unfollow(node=NODE, client="window-a"))
                assert _quiet(sub), "a renewal counted as a second lease"

                # A lease that is never renewed ends by itself.
                fol = c.call(Follow(node=NODE, client="short", lease_s=2.0))
                assert isinstance(fol, FollowReply) and fol.lease_s == 2.0
                assert _detail_within(sub, 1.5) > 0
                time.sleep(1.0)
                assert _quiet(sub), "an expired lease still sends detail"
