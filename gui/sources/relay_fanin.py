"""The app's side of relays: many nodes through one relay link, detail on demand, failover.

Pure Python, no Qt, no sockets: the LiveSource's network thread feeds a :class:`RelayFanIn`
with what the relay links yield (the relay's hello, its ``nsum`` batches, ``nodes`` and
``follow`` replies, ``d:NODE|`` detail, link states) and sends what :class:`FanOut` asks for.

- Summaries: each node behind a relay becomes a node of the app keyed by its node name. It is
  served by exactly one relay at a time (the first that listed it); another relay listing the
  same node is a standby, so two relays over the same nodes never duplicate them.
- Failover: a serving relay whose link is not live, or that sent no summary for
  :data:`SILENT_AFTER_S`, hands its nodes to a healthy relay that lists them, and a note says
  so; nodes nobody else serves go "stale" until a relay serves them again.
- Phases: a relay that lists more nodes than the app takes summaries of in a second
  (``SUMMARY_RATE_MAX``) is narrowed to some of its summary phases (:class:`FanOut` ``narrow``;
  each node then every few seconds, the app's work bounded whatever the fleet's size), and a
  note says how often. Its own samples (sent by the same daemon loop at the same tick as its
  summaries) then show that it is not silent.
- Detail: :meth:`RelayFanIn.set_detail` follows one node (``follow``, renewed at half the
  lease, ``unfollow`` when the view leaves it). The follow reply's snapshot and then the node's
  own stream messages (Clone pattern on the node's own ``seq``) come out exactly as for a node
  followed directly; while detailed, that node's summaries are held back so they do not
  overwrite the full samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agentd.protocol import ProtocolError
from agentd.protocol.codec import decode_stream
from agentd.protocol.messages import Request, SnapshotReply, StreamMsg
from agentd.protocol.relay import (
    SUMMARY_PHASES,
    Follow,
    FollowReply,
    Nodes,
    NodeSummary,
    RelayedMsg,
    Unfollow,
    summary_phases,
)

__all__ = ["FanOut", "RelayFanIn", "SILENT_AFTER_S"]

SILENT_AFTER_S = 3.0  # a serving relay that sent no summary this long is failed over (1 Hz ticks)


@dataclass
class FanOut:
    """What one round of input produced, for the network thread to emit and send."""

    added: list[tuple[str, str]] = field(default_factory=list)  # (node, serving relay key), new or moved
    summaries: list[NodeSummary] = field(default_factory=list)
    links: list[tuple[str, str, str]] = field(default_factory=list)  # (node, state, detail)
    snapshots: list[tuple[str, SnapshotReply]] = field(default_factory=list)
    messages: list[tuple[str, StreamMsg]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # something went wrong (failover, nodes orphaned)
    notices: list[str] = field(default_factory=list)  # news that is no failure (summary phases)
    sends: list[tuple[str, Request]] = field(default_factory=list)  # (relay key, request)
    narrow: list[tuple[str, int]] = field(default_factory=list)  # (relay key, summary phases to take)

    def __bool__(self) -> bool:
        return bool(self.added or self.summaries or self.links or self.snapshots or self.messages or self.notes
                    or self.notices or self.sends or self.narrow)


@dataclass
class _Relay:
    key: str
    node: str  # the relay's own node name (its hello)
    live: bool = True
    last_nsum: float = 0.0  # when it last showed it is alive (a summary; narrowed: anything of its own)
    nodes: set[str] = field(default_factory=set)  # what it lists
    phases: int = SUMMARY_PHASES  # of its summary phases taken (all: every node every tick)


@dataclass
class _Detail:
    node: str
    relay: str  # the relay key the follow went to
    snap_seq: int | None = None  # None: waiting for the follow reply
    epoch: int = 0
    last_seq: int = 0
    renew_at: float = 0.0
    buffer: list[StreamMsg] = field(default_factory=list)


class RelayFanIn:
    """Nodes behind relays, as the app follows them. ``direct``: the keys the app follows
    directly (a node followed both ways stays direct)."""

    def __init__(self, direct: set[str]) -> None:
        self.direct = direct
        self.relays: dict[str, _Relay] = {}
        self.serving: dict[str, str] = {}  # node -> relay key
        self.detail: _Detail | None = None
        self._want: str | None = None  # the node a view asked detail for
        self._stale: set[str] = set()  # nodes whose relay failed with no other to take them
        self.out = FanOut()

    def take(self) -> FanOut:
        out, self.out = self.out, FanOut()
        return out

    def is_relay(self, key: str) -> bool:
        return key in self.relays

    # ---- inputs ------------------------------------------------------------------------
    def relay_up(self, key: str, node: str, now: float) -> None:
        """The link to ``key`` took a snapshot and its hello lists ``relay``: ask for the subtree."""
        r = self.relays.get(key)
        if r is None:
            r = self.relays[key] = _Relay(key, node)
        r.node, r.live, r.last_nsum = node, True, now
        self.out.sends.append((key, Nodes()))
        if self._want is not None and self.detail is None:
            self.set_detail(self._want, now)

    def relay_link(self, key: str, state: str, now: float) -> None:
        r = self.relays.get(key)
        if r is not None:
            r.live = state == "live"
            if not r.live:
                self.tick(now)

    def on_summaries(self, key: str, batch: list[NodeSummary], now: float) -> None:
        """An ``nsum`` batch or a ``nodes`` reply from relay ``key``."""
        r = self.relays.get(key)
        if r is None:
            return
        r.last_nsum = now
        detailed = self.detail.node if self.detail is not None and self.detail.snap_seq is not None else None
        for s in batch:
            if s.node == r.node or s.node in self.direct or s.node in self.relays:
                continue
            r.nodes.add(s.node)
            cur = self.serving.get(s.node)
            if cur is None:
                self.serving[s.node] = key
                self.out.added.append((s.node, key))
            elif cur != key:
                continue  # a standby relay's view of a node another relay serves
            self._stale.discard(s.node)
            if s.node == detailed:
                # Its full stream drives it; keep only the link's word.
                self.out.links.append((s.node, s.link, s.detail))
                continue
            self.out.summaries.append(s)

    def on_nodes_reply(self, key: str, batch: list[NodeSummary], now: float) -> None:
        """The relay's ``nodes`` reply (its whole subtree): summaries, and how many of its
        summary phases to take from now on."""
        self.on_summaries(key, batch, now)
        r = self.relays.get(key)
        if r is None:
            return
        phases = summary_phases(len(batch))
        if phases != r.phases:
            r.phases = phases
            self.out.narrow.append((key, phases))
            if phases < SUMMARY_PHASES:
                self.out.notices.append(f"relay {key!r} serves {len(batch):,} nodes: each node's summary arrives every "
                                      f"{SUMMARY_PHASES / phases:g} s; open a node for its full detail each second")

    def heard(self, key: str, now: float) -> None:
        """A message of relay ``key``'s own: alive, for a relay whose summaries come in phases."""
        r = self.relays.get(key)
        if r is not None and r.phases < SUMMARY_PHASES:
            r.last_nsum = now

    def on_follow_reply(self, key: str, reply: FollowReply, now: float) -> None:
        d = self.detail
        if d is None or d.node != reply.node or d.relay != key:
            return
        d.renew_at = now + reply.lease_s / 2
        if d.snap_seq is not None:
            return  # a renewal: the stream is already flowing
        snap = reply.snapshot
        d.snap_seq = d.last_seq = snap.seq
        d.epoch = snap.epoch
        self.out.snapshots.append((d.node, snap))
        buffered, d.buffer = d.buffer, []
        for msg in buffered:
            self._accept(d, msg, now)

    def on_follow_failed(self, key: str, node: str, message: str) -> None:
        d = self.detail
        if d is not None and d.node == node and d.relay == key:
            self.detail = None
            self.out.notes.append(f"cannot show the detail of node {node!r} through relay {key!r}: {message}")

    def on_relayed(self, key: str, msg: RelayedMsg, now: float) -> None:
        d = self.detail
        if d is None or d.node != msg.origin or d.relay != key:
            return  # another client's follow: not ours to show
        try:
            inner = decode_stream(msg.body)
        except ProtocolError as exc:
            self.out.notes.append(f"node {msg.origin!r} via relay {key!r}: dropped an unreadable message: {exc.message}")
            return
        if d.snap_seq is None:
            d.buffer.append(inner)
        else:
            self._accept(d, inner, now)

    def _accept(self, d: _Detail, msg: StreamMsg, now: float) -> None:
        if msg.epoch and d.epoch and msg.epoch != d.epoch:
            self._refollow(d, now)  # the node restarted: its sequence began again
            return
        if msg.seq <= d.last_seq:
            return  # before the snapshot, or a duplicate
        if msg.seq != d.last_seq + 1:
            self._refollow(d, now)  # a gap: take a fresh snapshot
            return
        d.last_seq = msg.seq
        self.out.messages.append((d.node, msg))

    def _refollow(self, d: _Detail, now: float) -> None:
        d.snap_seq, d.buffer = None, []
        d.renew_at = now + 30.0
        self.out.sends.append((d.relay, Follow(node=d.node)))

    # ---- detail on demand ------------------------------------------------------------------
    def set_detail(self, node: str | None, now: float) -> None:
        """Show ``node`` in full (None: no node). Only nodes behind a relay need a follow."""
        self._want = node
        d = self.detail
        if d is not None and d.node != node:
            self.out.sends.append((d.relay, Unfollow(node=d.node)))
            self.detail = None
        if node is None or (self.detail is not None and self.detail.node == node):
            return
        relay = self.serving.get(node)
        r = self.relays.get(relay or "")
        if relay is None or r is None or not r.live:
            return  # not behind a live relay (a direct node, or not listed yet: retried on relay_up)
        self.detail = _Detail(node, relay, renew_at=now + 30.0)
        self.out.sends.append((relay, Follow(node=node)))

    # ---- timers --------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Renew the follow lease; fail over nodes of a relay that went quiet or down."""
        d = self.detail
        if d is not None and now >= d.renew_at:
            d.renew_at = now + 30.0
            self.out.sends.append((d.relay, Follow(node=d.node)))
        failed = [r for r in self.relays.values() if not self._healthy(r, now)]
        if not failed:
            return
        for r in failed:
            moved: dict[str, list[str]] = {}
            orphaned: list[str] = []
            for node, key in list(self.serving.items()):
                if key != r.key:
                    continue
                other = next((o for o in self.relays.values() if o.key != r.key and node in o.nodes
                              and self._healthy(o, now)), None)
                if other is None:
                    if node not in self._stale:
                        self._stale.add(node)
                        orphaned.append(node)
                    continue
                self.serving[node] = other.key
                self.out.added.append((node, other.key))
                moved.setdefault(other.key, []).append(node)
                if d is not None and d.node == node:
                    self.out.sends.append((d.relay, Unfollow(node=node)))  # harmless if it is gone
                    d.relay = other.key
                    self._refollow(d, now)
            why = "down" if not r.live else f"silent for over {SILENT_AFTER_S:g} s"
            for key, nodes in moved.items():
                self.out.notes.append(f"relay {r.key!r} is {why}: {len(nodes)} node(s) now through relay {key!r}")
            if orphaned:
                self.out.notes.append(f"relay {r.key!r} is {why} and no other relay serves its {len(orphaned)} "
                                      "node(s); they show their last values, marked stale")
                self.out.links.extend((n, "stale", f"relay {r.key} is {why}") for n in orphaned)

    def _healthy(self, r: _Relay, now: float) -> bool:
        return r.live and now - r.last_nsum <= SILENT_AFTER_S

    def forget_relay(self, key: str) -> None:
        """The relay was removed from the app; its nodes stay until another serves them."""
        self.relays.pop(key, None)

