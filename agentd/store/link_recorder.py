"""The one way a followed cluster is written to a recording: ``LinkRecorder.record(node, event)``.

``agentctl record`` and the app's recording (``gui.sources.live``) both follow daemons with
``agentd.transport.client.NodeLink`` and hand each link event (:mod:`agentd.protocol.link`)
here, so a file recorded by either replays the same way. The rule that lives here: a node's
stream messages are written only from its next snapshot on (a recording that starts while a
link is already live asks it for a fresh snapshot), so a replay always finds the inventory and
job table that the messages build on. No sockets here: the caller owns the links.
"""

from __future__ import annotations

from agentd.protocol.link import (
    LinkEvent,
    LinkMessage,
    LinkSnapshot,
    LinkState,
    LinkStatus,
)
from agentd.store.recording import Recorder

__all__ = ["LinkRecorder"]


class LinkRecorder:
    """Writes link events into ``recorder`` (which it does not own: the caller closes it).
    Raises RecordingError from the recorder when the file cannot be written. One thread."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self._waiting: set[str] = set()  # nodes whose messages wait for their next snapshot

    def follow(self, node: str, *, endpoint: str = "", name: str = "", state: LinkStatus = "connecting") -> None:
        """Declare a followed node (``node`` is the caller's key: a cluster-file name or the
        endpoint) and its current link state; its messages are written from its next snapshot."""
        self.recorder.add_node(node, endpoint=endpoint, name=name)
        self.recorder.link_state(node, state)
        self._waiting.add(node)

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
            if node not in self._waiting:
                self.recorder.feed(node, event.msg)
        elif isinstance(event, LinkState):
            self.recorder.link_state(node, event.state, event.detail)
        else:  # pragma: no cover - LinkEvent is closed; a new kind must be recorded on purpose
            raise TypeError(f"cannot record link event {type(event).__name__}")
