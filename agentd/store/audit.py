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
from typing import Any, TextIO

log = logging.getLogger(__name__)

AUDIT_NAME = "audit.log"
AUDIT_MODE = 0o600


class AuditLog:
    """Append-only JSON lines audit file. ``write`` never raises; see ``failures``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        self.written = 0
        self.failures: dict[str, int] = {}  # kind of failure -> entries dropped

    def _open(self) -> TextIO:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, AUDIT_MODE)
        try:
            os.fchmod(fd, AUDIT_MODE)  # an older file may have been created with looser bits
            return os.fdopen(fd, "a", encoding="utf-8")
        except BaseException:
            os.close(fd)
            raise

    def write(self, entry: dict[str, Any]) -> None:
        """Append ``entry`` as one line. Never raises: a failure is counted and logged once per kind."""
        try:
            line = json.dumps(entry, default=str, separators=(",", ":")) + "\n"
        except (TypeError, ValueError) as exc:
            self._failed("encode", exc)
            return
        with self._lock:
            try:
                if self._file is None:
                    self._file = self._open()
                self._file.write(line)
                self._file.flush()
                self.written += 1
            except (OSError, ValueError) as exc:
                kind = f"errno {exc.errno}" if isinstance(exc, OSError) and exc.errno else type(exc).__name__
                self._failed(kind, exc)
                self._drop_file()  # reopen next time: the disk may have space again

    def _drop_file(self) -> None:
        if self._file is not None:
            f, self._file = self._file, None
            try:
                f.close()
            except (OSError, ValueError):
                pass  # the failed flush is already counted

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
            self._drop_file()
