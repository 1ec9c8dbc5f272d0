"""Link events: what a client that follows one daemon's stream hands to its owner.

A follower (``agentd.transport.client.NodeLink``) turns sockets into these typed events, and
everything above it (the app's network worker, ``agentctl watch``/``top``/``record``, the
recorder) reads only these, so none of them needs to know about sockets. Order per link: a
:class:`LinkSnapshot` always comes before the :class:`LinkMessage` s that build on it (Clone
pattern); :class:`LinkState` reports each change of the link's health, only on change.
"""

from __future__ import annotations

from typing import Literal, get_args

import msgspec

from agentd.protocol.messages import HelloReply, SnapshotReply, StreamMsg

__all__ = ["LINK_STATUSES", "LinkEvent", "LinkMessage", "LinkSnapshot", "LinkState", "LinkStatus"]

#: The health of a link: "connecting" (hello sent, no snapshot yet), "live" (snapshot taken,
#: messages flowing), "stale" (three heartbeats missed; probing with a fresh hello), "down"
#: (no answer or refused; retrying after a pause).
LinkStatus = Literal["connecting", "live", "stale", "down"]
LINK_STATUSES: tuple[LinkStatus, ...] = get_args(LinkStatus)


class LinkSnapshot(msgspec.Struct, frozen=True):
    """The full state of the node at ``reply.seq``; replaces all that was known about it."""

    endpoint: str
    node: str
    reply: SnapshotReply
    hello: HelloReply


class LinkMessage(msgspec.Struct, frozen=True):
    """One stream message, in sequence after the last snapshot."""

    endpoint: str
    msg: StreamMsg


class LinkState(msgspec.Struct, frozen=True):
    """The link's health changed to ``state``; ``detail`` says why in words (may be empty)."""

    endpoint: str
    node: str
    state: LinkStatus
    detail: str = ""


LinkEvent = LinkSnapshot | LinkMessage | LinkState
