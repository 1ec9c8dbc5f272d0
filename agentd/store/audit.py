"""The audit log: one JSON object per line in ``<state_dir>/audit.log`` (mode 0600).

Writing it must never take the daemon down: a full disk, a removed directory or a value JSON
cannot encode is counted and logged once per kind of failure, and the entry is dropped.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

AUDIT_NAME = "audit.log"
AUDIT_MODE = 0o600


class AuditLog:
    """Append-only JSON lines audit file. ``write`` never raises; see ``failures``.

    Each entry is one ``write`` on an O_APPEND descriptor; a write the disk cuts short is
    truncated away again, so the file holds only whole lines.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.written = 0
        self.failures: dict[str, int] = {}  # kind of failure -> entries dropped

    def _open(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, AUDIT_MODE)
        try:
            os.fchmod(fd, AUDIT_MODE)  # an older file may have been created with looser bits
        except OSError:
            os.close(fd)
            raise
        return fd

    def write(self, entry: dict[str, Any]) -> None:
        """Append ``entry`` as one line. Never raises: a failure is counted and logged once per kind."""
        try:
            data = (json.dumps(entry, default=str, separators=(",", ":")) + "\n").encode()
        except (TypeError, ValueError) as exc:
            self._failed("encode", exc)
            return
        with self._lock:
            size = -1
            try:
                if self._fd is None:
                    self._fd = self._open()
                size = os.fstat(self._fd).st_size
                done = os.write(self._fd, data)
                if done != len(data):
                    raise OSError(28, f"short write ({done} of {len(data)} bytes)")
                self.written += 1
            except OSError as exc:
                self._failed(f"errno {exc.errno}" if exc.errno else type(exc).__name__, exc)
                if self._fd is not None and size >= 0:
                    try:
                        os.ftruncate(self._fd, size)  # no torn line
                    except OSError:
                        pass
                self._drop_fd()  # reopen next time: the disk may have space again

    def _drop_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass

    def _failed(self, kind: str, exc: BaseException) -> None:
        first = kind not in self.failures
        self.failures[kind] = self.failures.get(kind, 0) + 1
        if first:
            log.error("audit log %s: cannot write an entry (%s); entries are dropped and counted until it "
                      "works again (free space or fix the state dir)", self.path, exc)

    @property
    def dropped(self) -> int:
        """Entries lost so far, all kinds together."""
        return sum(self.failures.values())

    def close(self) -> None:
        with self._lock:
            self._drop_fd()
