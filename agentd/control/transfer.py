"""Chunked, resumable checkpoint transfer between two daemons (no sockets here).

Sender: :func:`send_stream` pushes a byte source as ``MigrateChunk`` requests through client objects
made by a factory (``connect()`` -> object with ``call(request) -> reply`` and ``close()``;
the daemon passes one that builds a transport ``NodeClient``). ``window`` requests are in
flight at once, each on its own client, so the link stays busy while the target writes.
After a dropped connection the sender asks ``MigrateStatus`` for the offset the target holds
and continues from there, until ``retry_s`` passes without progress.

Receiver: :class:`IncomingStream` takes chunks in any order within a bounded window, puts
them back in order for its sink, tracks the contiguous prefix (the ``next_offset`` it acks)
and hashes the prefix as it grows, so the digest is ready when the last byte lands.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from agentd.control.checkpoint_archive import CHUNK_BYTES
from agentd.protocol.errors import ErrorCode, ProtocolError
from agentd.protocol.migration import MigrateChunk, MigrateStatus

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 4  # chunks in flight
DEFAULT_RETRY_S = 20.0  # give up after this long without reaching the target
DEFAULT_COMMIT_RESOLVE_S = 120.0  # keep asking a silent target about a sent commit this long
MAX_AHEAD_BYTES = 64 * CHUNK_BYTES  # how far past its prefix a receiver accepts chunks
_RETRY_PAUSE_S = 0.25


class Client(Protocol):
    def call(self, request: Any) -> Any: ...
    def close(self) -> None: ...


ClientFactory = Callable[[], Client]
Progress = Callable[[int, int], None]  # (bytes acknowledged, bytes total)
Reader = Callable[[int, int], bytes]  # (offset, length) -> bytes; called in offset order


class TransferError(Exception):
    """The transfer failed. ``definitive``: the target refused (retrying will not help);
    otherwise the target could not be reached for ``retry_s``. ``code`` is the target's
    error code when it answered."""

    def __init__(self, message: str, definitive: bool, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.definitive = definitive
        self.code = code


def remote_code(exc: BaseException) -> int | None:
    """The error code of an exception that carries the target's error reply, else None.

    The transport's RemoteError and ProtocolError both carry ``code``; connection failures
    (Unreachable, timeouts, OSError) do not.
    """
    code = getattr(exc, "code", None)
    return int(code) if isinstance(code, int) else None


def _describe(exc: BaseException) -> str:
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


def send_stream(
    connect: ClientFactory,
    migration_id: str,
    read: Reader,
    size_bytes: int,
    *,
    start_offset: int = 0,
    window: int = DEFAULT_WINDOW,
    chunk_bytes: int = CHUNK_BYTES,
    retry_s: float = DEFAULT_RETRY_S,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Send ``size_bytes`` from ``read`` to the target as migration ``migration_id``; return
    bytes acknowledged.

    ``read(offset, length)`` is called in increasing offset order within each pass (one at a
    time), so it may hash what it reads; after a dropped connection a pass restarts at the
    target's offset and reads some bytes again.

    Raises TransferError when the target refuses a chunk (definitive) or stays unreachable
    for ``retry_s`` seconds (not definitive); exceptions from ``read`` propagate.
    """
    offset = start_offset
    last_progress = clock()
    while True:
        if cancelled():
            raise TransferError(f"transfer of migration {migration_id} was cancelled", definitive=True)
        try:
            offset = _send_round(connect, migration_id, read, size_bytes, offset, window, chunk_bytes, progress, cancelled)
        except _Dropped as dropped:
            offset = max(offset, dropped.acked)
            log.info("migration %s: connection dropped at %d bytes: %s", migration_id, offset, dropped.reason)
        else:
            if offset >= size_bytes:
                return offset
        # Dropped (or an unexpected hole): ask the target where it stands, retrying.
        while True:
            if clock() - last_progress > retry_s:
                raise TransferError(
                    f"target unreachable for {retry_s:.0f} s during migration {migration_id} "
                    f"({offset} of {size_bytes} bytes sent)", definitive=False)
            if cancelled():
                raise TransferError(f"transfer of migration {migration_id} was cancelled", definitive=True)
            client = None
            try:
                client = connect()
                status = client.call(MigrateStatus(migration_id=migration_id))
            except Exception as exc:  # noqa: BLE001 - classified below
                code = remote_code(exc)
                if code is not None:
                    raise TransferError(f"target refused migration {migration_id}: {_describe(exc)}", True, code) from None
                time.sleep(_RETRY_PAUSE_S)
                continue
            finally:
                if client is not None:
                    client.close()
            if status.phase not in ("receiving", "received"):
                raise TransferError(f"target reports migration {migration_id} as {status.phase}: {status.message}", definitive=True)
            offset = status.next_offset  # may go back: the target restarted and lost bytes
            last_progress = clock()
            if progress:
                progress(offset, size_bytes)
            break


class _Dropped(Exception):
    def __init__(self, acked: int, reason: str) -> None:
        super().__init__(reason)
        self.acked = acked
        self.reason = reason


class _ReadFailed(Exception):
    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _send_round(connect: ClientFactory, mid: str, read: Reader, size: int, start: int, window: int,
                chunk_bytes: int, progress: Progress | None, cancelled: Callable[[], bool]) -> int:
    """Send every chunk from ``start`` with ``window`` workers; return the acked prefix.

    Raises _Dropped on a connection failure and TransferError on a refusal.
    """
    lock = threading.Lock()
    state = {"cursor": start, "acked": start}
    failure: list[BaseException] = []

    def take() -> tuple[int, bytes] | None:
        """The next chunk to send, read in offset order; None when done."""
        with lock:
            off = state["cursor"]
            if failure or off >= size:
                return None
            try:
                data = read(off, min(chunk_bytes, size - off))
            except Exception as exc:  # not a connection problem: re-raised below
                raise _ReadFailed(exc) from exc
            state["cursor"] = off + len(data)
            return off, data

    def worker() -> None:
        client = None
        try:
            client = connect()
            while (got := take()) is not None:
                if cancelled():
                    raise TransferError(f"transfer of migration {mid} was cancelled", definitive=True)
                off, data = got
                reply = client.call(MigrateChunk(migration_id=mid, offset=off, data=data))
                with lock:
                    acked = state["acked"] = max(state["acked"], reply.next_offset)
                if progress:
                    progress(acked, size)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            with lock:
                failure.append(exc)
        finally:
            if client is not None:
                client.close()

    threads = [threading.Thread(target=worker, name=f"migrate-send-{mid}-{i}", daemon=True) for i in range(max(1, window))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failure:
        refusals = [e for e in failure if isinstance(e, TransferError) or remote_code(e) is not None]
        if refusals:
            exc = refusals[0]
            if isinstance(exc, TransferError):
                raise exc
            raise TransferError(f"target refused a chunk of migration {mid}: {_describe(exc)}", True, remote_code(exc))
        for e in failure:
            if isinstance(e, _ReadFailed):
                raise e.cause
        raise _Dropped(state["acked"], _describe(failure[0]))
    return state["acked"]


class IncomingStream:
    """The receiving end of one transfer: ``size_bytes`` arriving as chunks in any order.

    Chunks are put back in order (at most ``max_ahead_bytes`` past the contiguous prefix),
    hashed, and handed to ``sink`` in order; ``next_offset`` is the end of that prefix, the
    offset the sender is acked. Nothing is kept on disk here: the sink (an unpacker) writes
    the checkpoint's files, so the bytes land once. Raises ProtocolError for chunks out of
    range (TOO_LARGE) or too far ahead (CONFLICT), and whatever the sink raises.
    """

    def __init__(self, size_bytes: int, sink: Callable[[bytes], None], max_ahead_bytes: int = MAX_AHEAD_BYTES) -> None:
        self.size_bytes = size_bytes
        self.next_offset = 0
        self.max_ahead_bytes = max_ahead_bytes
        self._sink = sink
        self._pending: dict[int, bytes] = {}
        self._lock = threading.Lock()
        self._hash = hashlib.sha256()

    def write(self, offset: int, data: bytes) -> int:
        """Take the chunk at ``offset``; return the new ``next_offset``."""
        if offset + len(data) > self.size_bytes:  # offset >= 0: MigrateChunk's schema says so
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                f"chunk at offset {offset} of {len(data)} bytes runs past the offered checkpoint size {self.size_bytes}",
                "offset")
        with self._lock:
            if offset + len(data) <= self.next_offset or offset in self._pending:
                return self.next_offset  # a duplicate after a resend: harmless
            if offset > self.next_offset + self.max_ahead_bytes:
                raise ProtocolError(
                    ErrorCode.CONFLICT,
                    f"chunk at offset {offset} is more than {self.max_ahead_bytes} bytes past the expected offset {self.next_offset}; resend from there",
                    "offset")
            if offset < self.next_offset:
                # An overlapping resend (chunks realigned): keep only the new tail.
                data = data[self.next_offset - offset:]
                offset = self.next_offset
            self._pending[offset] = data
            while self.next_offset in self._pending:
                block = self._pending.pop(self.next_offset)
                self._hash.update(block)
                self._sink(block)
                self.next_offset += len(block)
            return self.next_offset

    @property
    def complete(self) -> bool:
        return self.next_offset >= self.size_bytes

    def digest(self) -> str:
        """SHA-256 (hex) of the bytes taken so far."""
        with self._lock:
            return self._hash.hexdigest()
