"""What the GUI thread asks the LiveSource's network thread to do: one frozen dataclass per
command, carried by a :class:`CommandQueue` that also wakes the thread at once.

The worker keeps one handler per command type (a dispatch table), so adding a command is a
new class here and one handler there; nothing is a string-tagged tuple.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass

from agentd.protocol.messages import Request
from gui.sources.base import NodeAddress

__all__ = ["AddNode", "Command", "CommandQueue", "RemoveNode", "SendRequest", "SetRecordingMeta",
           "StartRecording", "StopRecording", "WatchDetail"]


@dataclass(frozen=True)
class AddNode:
    """Follow one more node (stream + requests)."""

    address: NodeAddress


@dataclass(frozen=True)
class RemoveNode:
    """Stop following a node; its outstanding requests fail."""

    key: str


@dataclass(frozen=True)
class SendRequest:
    """Send ``request`` to node ``key``; ``token`` names the one done/failed signal to come."""

    token: int
    key: str
    request: Request


@dataclass(frozen=True)
class StartRecording:
    """Record every followed node to ``path`` from each node's next snapshot on."""

    path: str
    title: str = ""
    notes: str = ""


@dataclass(frozen=True)
class StopRecording:
    """Stop recording; a title/notes given (not None) are saved into the file."""

    title: str | None = None
    notes: str | None = None


@dataclass(frozen=True)
class SetRecordingMeta:
    """Edit the title/notes of a finished recording at ``path``."""

    path: str
    title: str | None
    notes: str | None


@dataclass(frozen=True)
class WatchDetail:
    """Show node ``key`` in full (None: none). A node behind a relay is followed through it
    (``follow``, renewed, ``unfollow`` when the view leaves it); a direct node needs nothing."""

    key: str | None


Command = AddNode | RemoveNode | SendRequest | StartRecording | StopRecording | SetRecordingMeta | WatchDetail


class CommandQueue:
    """A queue of commands with a wake-up pipe: :meth:`put` (any thread) writes one byte, and
    the network thread waits on :meth:`fileno` together with its sockets, so a command is
    taken at once rather than at the next poll timeout."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._lock = threading.Lock()
        self._closed = False

    def fileno(self) -> int:
        return self._r

    def put(self, cmd: Command) -> None:
        self._q.put(cmd)
        self.wake()

    def wake(self) -> None:
        """Make the waiting thread return from its poll (a full pipe is awake already)."""
        with self._lock:
            if not self._closed:
                try:
                    os.write(self._w, b"\0")
                except BlockingIOError:
                    pass

    def take_all(self) -> list[Command]:
        """Every command queued so far, oldest first; clears the wake-up."""
        with self._lock:
            if not self._closed:
                try:
                    while os.read(self._r, 4096):
                        pass
                except BlockingIOError:
                    pass
        out: list[Command] = []
        while True:
            try:
                out.append(self._q.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        """Close the pipe (the network thread, when it ends); commands put later are still
        queued, and :meth:`take_all` still returns them."""
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._r)
                os.close(self._w)
