"""Chunked, resumable checkpoint transfer between two daemons (no sockets here).

Sender: :func:`send_file` pushes a file as ``MigrateChunk`` requests through client objects
made by a factory (``connect()`` -> object with ``call(request) -> reply`` and ``close()``;
the daemon passes one that builds a transport ``NodeClient``). ``window`` requests are in
flight at once, each on its own client, so the link stays busy while the target writes.
After a dropped connection the sender asks ``MigrateStatus`` for the offset the target holds
and continues from there, until ``retry_s`` passes without progress.

Receiver: :class:`IncomingFile` takes chunks in any order within a bounded window, writes
them in place, tracks the contiguous prefix (the ``next_offset`` it acks) and hashes the
prefix as it grows, so the digest is ready when the last byte lands.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agentd.control.checkpoint_archive import CHUNK_BYTES, sha256_file
from agentd.protocol.errors import ErrorCode, ProtocolError
from agentd.protocol.migration import MigrateChunk, MigrateStatus

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 4  # chunks in flight
DEFAULT_RETRY_S = 20.0  # give up after this long without reaching the target
MAX_AHEAD_BYTES = 64 * CHUNK_BYTES  # how far past its prefix a receiver accepts chunks
_RETRY_PAUSE_S = 0.25
_PACK_WAIT_S = 0.002  # poll for the packer's next megabyte


class Client(Protocol):
    def call(self, request: Any) -> Any: ...
    def close(self) -> None: ...


ClientFactory = Callable[[], Client]
Progress = Callable[[int, int], None]  # (bytes acknowledged, bytes total)
Available = Callable[[], tuple[int, bool]]  # (bytes readable so far, file complete)


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


def send_file(
    connect: ClientFactory,
    migration_id: str,
    path: Path,
    size_bytes: int,
    *,
    start_offset: int = 0,
    window: int = DEFAULT_WINDOW,
    chunk_bytes: int = CHUNK_BYTES,
    retry_s: float = DEFAULT_RETRY_S,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
    available: Available | None = None,
) -> int:
    """Send ``path`` to the target as migration ``migration_id``; return bytes acknowledged.

    ``available()`` -> ``(bytes readable, finished)`` lets the file grow while it is sent
    (the packer writes it); ``size_bytes`` is then only the upper bound used for progress,
    and the final size is the readable size once finished.

    Raises TransferError when the target refuses a chunk (definitive) or stays unreachable
    for ``retry_s`` seconds (not definitive).
    """
    if available is None:
        available = lambda: (size_bytes, True)  # noqa: E731 - a complete file
    offset = start_offset
    last_progress = clock()
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            if cancelled():
                raise TransferError(f"transfer of migration {migration_id} was cancelled", definitive=True)
            try:
                offset = _send_round(connect, migration_id, fd, available, offset, window, chunk_bytes, progress, cancelled)
            except _Dropped as dropped:
                offset = max(offset, dropped.acked)
                log.info("migration %s: connection dropped at %d bytes: %s", migration_id, offset, dropped.reason)
            else:
                final, finished = available()
                if finished and offset >= final:
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
                if status.next_offset > offset or status.next_offset < offset:
                    offset = status.next_offset
                last_progress = clock()
                if progress:
                    progress(offset, size_bytes)
                break
    finally:
        os.close(fd)


class _Dropped(Exception):
    def __init__(self, acked: int, reason: str) -> None:
        super().__init__(reason)
        self.acked = acked
        self.reason = reason


def _send_round(connect: ClientFactory, mid: str, fd: int, available: Available, start: int, window: int,
                chunk_bytes: int, progress: Progress | None, cancelled: Callable[[], bool]) -> int:
    """Send every chunk from ``start`` with ``window`` workers; return the acked prefix.

    Raises _Dropped on a connection failure and TransferError on a refusal.
    """
    lock = threading.Lock()
    state = {"cursor": start, "acked": start}
    failure: list[BaseException] = []

    def take() -> tuple[int, int] | None:
        """The next chunk to send (offset, length), waiting for the packer; None when done."""
        while True:
            readable, finished = available()
            with lock:
                if failure:
                    return None
                off = state["cursor"]
                if finished and off >= readable:
                    return None
                if finished or off + chunk_bytes <= readable:
                    state["cursor"] = off + chunk_bytes
                    return off, min(chunk_bytes, readable - off)
            if cancelled():
                raise TransferError(f"transfer of migration {mid} was cancelled", definitive=True)
            time.sleep(_PACK_WAIT_S)

    def worker() -> None:
        client = None
        try:
            client = connect()
            while True:
                got = take()
                if got is None:
                    return
                off, length = got
                if cancelled():
                    raise TransferError(f"transfer of migration {mid} was cancelled", definitive=True)
                data = os.pread(fd, length, off)
                reply = client.call(MigrateChunk(migration_id=mid, offset=off, data=data))
                with lock:
                    if reply.next_offset > state["acked"]:
                        state["acked"] = reply.next_offset
                        acked = state["acked"]
                    else:
                        acked = -1
                if progress and acked >= 0:
                    progress(acked, available()[0])
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
        raise _Dropped(state["acked"], _describe(failure[0]))
    return state["acked"]


@dataclass
class IncomingFile:
    """The receiving end of one transfer: a file of ``size_bytes`` filled by chunks.

    ``next_offset`` is the end of the contiguous bytes written. Raises ProtocolError for
    chunks out of range (TOO_LARGE), too far ahead (CONFLICT) and a full disk (FAILED).
    """

    path: Path
    size_bytes: int
    next_offset: int = 0
    max_ahead_bytes: int = MAX_AHEAD_BYTES
    on_contiguous: Callable[[bytes], None] | None = None  # gets the bytes in file order
    _pending: dict[int, bytes] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _hash: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.next_offset == 0:
            with open(self.path, "wb"):
                pass
            self._hash = hashlib.sha256()
        # Resumed after a restart: the running hash is lost; digest() rereads the file.

    def write(self, offset: int, data: bytes) -> int:
        """Store ``data`` at ``offset``; return the new ``next_offset``."""
        if offset < 0 or offset + len(data) > self.size_bytes:
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
            try:
                fd = os.open(self.path, os.O_WRONLY)
                try:
                    os.pwrite(fd, data, offset)
                finally:
                    os.close(fd)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise ProtocolError(ErrorCode.FAILED, f"disk full on the target while receiving the checkpoint into {self.path.parent}; free space there or pick another node") from None
                raise ProtocolError(ErrorCode.FAILED, f"cannot write the checkpoint to {self.path}: {exc}") from None
            if offset < self.next_offset:
                # An overlapping resend (chunks realigned after a restart): keep only the new tail.
                data = data[self.next_offset - offset:]
                offset = self.next_offset
            self._pending[offset] = data
            while self.next_offset in self._pending:
                block = self._pending.pop(self.next_offset)
                if self._hash is not None:
                    self._hash.update(block)
                if self.on_contiguous is not None:
                    self.on_contiguous(block)
                self.next_offset += len(block)
            return self.next_offset

    @property
    def complete(self) -> bool:
        return self.next_offset >= self.size_bytes

    def digest(self) -> str:
        """SHA-256 (hex) of the received file (from the running hash when it covers it all)."""
        with self._lock:
            if self._hash is not None and not self._pending:
                return self._hash.hexdigest()
        return sha256_file(self.path)
