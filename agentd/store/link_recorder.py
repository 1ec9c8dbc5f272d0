"""The one way a followed cluster is written to a recording: ``LinkRecorder.record(node, event)``.

``agentctl record`` and the app's recording (``gui.sources.live``) both follow daemons with
``agentd.transport.client.NodeLink`` and hand each link event (:mod:`agentd.protocol.link`)
here, so a file recorded by either replays the same way. The rule that lives here: a node's
stream messages are written only from its next snapshot on (a recording that starts while a
link is already live asks it for a fresh snapshot), so a replay always finds the inventory and
job table that the messages build on. No sockets here: the caller owns the links.

Through a relay, its summaries record every node behind it (:mod:`agentd.store.relay_summaries`),
and the nodes the caller follows there (:meth:`LinkRecorder.follow_detail`) are recorded in
full from the detail that crosses the relay, in place of their summaries.
"""

from __future__ import annotations

from agentd.protocol.codec import decode_stream
from agentd.protocol.errors import ProtocolError
from agentd.protocol.link import (
    LinkEvent,
    LinkMessage,
    LinkSnapshot,
    LinkState,
    LinkStatus,
)
from agentd.protocol.messages import SnapshotReply
from agentd.protocol.relay import RelayedMsg, SummaryMsg
from agentd.store.recording import Recorder
from agentd.store.relay_summaries import SummaryWriter

__all__ = ["LinkRecorder"]


class LinkRecorder:
    """Writes link events into ``recorder`` (which it does not own: the caller closes it).
    Raises RecordingError from the recorder when the file cannot be written. One thread."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self._waiting: set[str] = set()  # nodes whose messages wait for their next snapshot
        self._summaries = SummaryWriter(recorder)
        self._detail: dict[str, tuple[int, int]] = {}  # node behind a relay -> its detail snapshot's (epoch, seq)

    def follow(self, node: str, *, endpoint: str = "", name: str = "", state: LinkStatus = "connecting") -> None:
        """Declare a followed node (``node`` is the caller's key: a cluster-file name or the
        endpoint) and its current link state; its messages are written from its next snapshot."""
        self.recorder.add_node(node, endpoint=endpoint, name=name)
        self.recorder.link_state(node, state)
        self._waiting.add(node)

    def follow_detail(self, node: str, snapshot: SnapshotReply) -> None:
        """Record ``node`` (behind a relay) in full from now on: its snapshot (a ``follow``
        reply's), then the detail the relay relays; its summaries are no longer recorded."""
        self.recorder.add_node(node, name=node)
        self.recorder.feed(node, snapshot)
        self._detail[node] = (snapshot.epoch, snapshot.seq)

    def waiting(self, node: str) -> bool:
        """Whether ``node``'s messages are held back until its next snapshot."""
        return node in self._waiting

    def record(self, node: str, event: LinkEvent) -> None:
        """Write one link event of ``node``: a snapshot, a stream message (dropped while the
        node waits for its snapshot), or a change of link state."""
        if isinstance(event, LinkSnapshot):
            self._waiting.discard(node)
            self.recorder.feed(node, event.reply)
        elif isinstance(event, LinkMessage):
            msg = event.msg
            if isinstance(msg, SummaryMsg):
                self._summaries.feed(msg, skip=self._detail)
            elif isinstance(msg, RelayedMsg):
                if msg.origin in self._detail:
                    try:
                        inner = decode_stream(msg.body)
                    except ProtocolError:  # one malformed relayed message is dropped, not the recording
                        return
                    epoch, seq = self._detail[msg.origin]
                    if inner.epoch != epoch or inner.seq > seq:  # Clone: only what follows its snapshot
                        self.recorder.feed(msg.origin, inner)
            elif node not in self._waiting:
                self.recorder.feed(node, msg)
        elif isinstance(event, LinkState):
            self.recorder.link_state(node, event.state, event.detail)
        else:  # pragma: no cover - LinkEvent is closed; a new kind must be recorded on purpose
            raise TypeError(f"cannot record link event {type(event).__name__}")
