"""The one interface every feed of the app implements: live daemons or a recording.

The views never know where data comes from. A :class:`DataSource` emits decoded, immutable
protocol structs (``agentd.protocol.messages``) on the GUI thread through Qt signals, and
carries out requests asynchronously. :class:`gui.sources.live.LiveSource` talks to agentd
daemons over ZeroMQ from a worker thread; ``gui.sources.replay.ReplaySource`` reads a recording
and emits the very same signals, so live, paused and replayed views share one code path.

Contract for implementers
-------------------------
* Node keys. Every signal names a node by its *key*: a stable string the source chooses and
  never changes for the life of the source. LiveSource uses the name given in the cluster
  file / connection dialog, else the endpoint. ReplaySource uses the recorded node name.
  The daemon's own node name (which prefixes job ids, ``gpu-a.42``) is in the snapshot's
  ``inventory.node`` and may differ from the key; the state keeps both.
* Order per node: ``node_added`` first, then any number of ``link_state`` changes; a
  ``snapshot`` always precedes the ``message`` s that build on it (Clone pattern: the source
  has already dropped stream messages at or below ``SnapshotReply.seq``). After a reconnect
  a new ``snapshot`` arrives and replaces everything known about that node.
* Threads. All signals are emitted on (or queued to) the thread the source object lives in,
  the GUI thread. No method blocks on the network or the disk; ``start``/``stop`` return
  quickly (``stop`` may wait a bounded time for a worker thread to finish).
* Requests. :meth:`request` returns a token at once; exactly one of ``request_done`` or
  ``request_failed`` follows later with that token, never both, never neither (a source that
  stops with requests outstanding fails them with code ``None`` and a message saying so).
* Failures are never dropped: anything that goes wrong outside a request (a node that cannot
  be decoded, a recording that is truncated) is reported with ``problem``.
* ``reset`` tells the views to forget everything (for example after a replay seek); fresh
  ``node_added`` / ``snapshot`` signals follow.

This module is a stable contract: extend it only additively.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PySide6.QtCore import QObject, Signal

from agentd.protocol.messages import Request

__all__ = ["Capabilities", "DataSource", "LinkStates", "NodeAddress", "RequestFailure"]

#: Link states, in the words the status bar and the tree show.
LinkStates = ("connecting", "live", "stale", "down")


@dataclass(frozen=True)
class Capabilities:
    """What a source can do; the UI enables and disables its controls from this.

    ``can_control``: pause/resume/priority/cancel/migrate/submit requests are carried out
    (False in replay: the UI disables control actions instead of sending them).
    ``can_add_nodes``: :meth:`DataSource.add_node` works (the connection dialog is offered).
    ``can_seek``: the source has a timeline (replay: play/pause/seek/speed live on the source
    subclass itself). ``live``: values are current, so ``now_s`` is the wall clock.
    ``label``: a few words for the title bar ("live", "demo / simulated", "replay of FILE").
    """

    can_control: bool = True
    can_add_nodes: bool = False
    can_seek: bool = False
    live: bool = True
    label: str = "live"


@dataclass(frozen=True)
class RequestFailure:
    """Why a request did not succeed, in words a person can act on.

    ``code`` is an :class:`agentd.protocol.errors.ErrorCode` value for an error reply from a
    daemon, or None when no reply came (unreachable node, timeout, source stopped, replay).
    ``message`` names the object, the value and the remedy; ``field`` the request field at
    fault (may be empty).
    """

    node: str
    request: Request
    code: int | None
    message: str
    field: str = ""

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class NodeAddress:
    """How to reach one node: a key (see module doc), its request endpoint, optional CURVE
    server key (z85 text) and free-form labels from the cluster file."""

    key: str
    endpoint: str
    server_key: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


class DataSource(QObject):
    """Abstract feed of cluster data. Subclasses implement the methods below and emit:

    ``node_added(key: str)``
        A node the source will report on. Emitted before anything else about it.
    ``node_removed(key: str)``
        The node was removed (by the user); forget it.
    ``snapshot(key: str, reply: SnapshotReply)``
        Full state of a node (inventory, recent samples, jobs, events).
    ``message(key: str, msg: StreamMsg)``
        One stream message (SampleMsg, JobMsg, EventMsg, InventoryMsg, Heartbeat).
    ``link_state(key: str, state: str)``
        One of :data:`LinkStates`: "connecting", "live", "stale" (three heartbeats missed,
        reconnecting), "down" (cannot be reached). Emitted only on change.
    ``request_done(token: int, key: str, reply: Reply)``
        The reply of a request made with :meth:`request`.
    ``request_failed(token: int, failure: RequestFailure)``
        The request failed; ``failure.message`` is ready to show.
    ``problem(message: str)``
        Something went wrong outside a request; show it in the event log.
    ``notice(message: str)``
        Something a person should know about the source that is not a failure (how often a
        big relay's summaries arrive); show it in the event log.
    ``reset()``
        Forget every node's state; node_added/snapshot follow.
    ``summaries(batch: list[NodeSummary])``
        Summary-level news of nodes behind a relay (``agentd.protocol.relay``), keyed by
        ``NodeSummary.node``; each was announced with ``node_added`` first. A node whose detail
        is watched (:meth:`DataSource.watch_detail`) gets ``snapshot``/``message`` instead.
    """

    node_added = Signal(str)
    node_removed = Signal(str)
    snapshot = Signal(str, object)
    message = Signal(str, object)
    link_state = Signal(str, str)
    request_done = Signal(int, str, object)
    request_failed = Signal(int, object)
    problem = Signal(str)
    notice = Signal(str)
    reset = Signal()
    summaries = Signal(object)

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Begin emitting. Returns at once; connecting happens in the background."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop emitting and release threads, sockets and files. Idempotent. After it
        returns no signal is emitted any more and no thread of this source is running."""
        raise NotImplementedError

    # ---- what the source offers -------------------------------------------------------

    def capabilities(self) -> Capabilities:
        """What this source can do (constant for the life of the source)."""
        return Capabilities()

    def nodes(self) -> list[str]:
        """Keys of the nodes currently known, in the order they were added."""
        raise NotImplementedError

    def address(self, key: str) -> NodeAddress | None:
        """How to reach a node (for migrate targets and the connection dialog); None when the
        source has no address for it (replay)."""
        return None

    def relay_of(self, key: str) -> str | None:
        """The relay that serves node ``key`` (None: followed directly, or no relays here).
        Relays forward single-job requests only, so group verbs go direct or rank by rank."""
        return None

    def now_s(self) -> float:
        """The source's current wall time in seconds since the epoch: the clock for live
        sources, the playhead for a replay. Charts end their x axis here."""
        raise NotImplementedError

    # ---- actions ----------------------------------------------------------------------

    def request(self, key: str, req: Request) -> int:
        """Send ``req`` to node ``key`` without blocking; return a token (>0).

        Exactly one of ``request_done(token, key, reply)`` or ``request_failed(token,
        failure)`` follows. Sources that cannot control (``can_control`` False) fail control
        requests with a RequestFailure saying so, still asynchronously."""
        raise NotImplementedError

    def watch_detail(self, key: str | None) -> None:
        """A view shows node ``key`` in full now (None: no node). Sources that hold only
        summaries of some nodes (a relay) fetch that node's full stream; others ignore it."""

    def add_node(self, address: NodeAddress) -> None:
        """Start following one more node (only when ``can_add_nodes``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot add nodes")

    def remove_node(self, key: str) -> None:
        """Stop following a node (only when ``can_add_nodes``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot remove nodes")
