"""The daemon's end of job reports: a unix datagram socket and the ``AGENTD_*`` stdout line parser."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import os
import select
import socket
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any

from agentd.kernel.procfs import read_cgroup_text

log = logging.getLogger(__name__)

SOCKET_NAME = "report.sock"
MAX_UNIX_PATH = 100  # sun_path holds 108 bytes; keep a margin
MAX_DATAGRAM = 65536
RCVBUF_BYTES = 1 << 20
MAX_DRAIN = 10_000
_UCRED = struct.Struct("iII")  # pid, uid, gid of the sender (SCM_CREDENTIALS)


def _evidence(pid: int) -> tuple[str | None, int | None]:
    """(/proc/PID/cgroup text, session id) of a sender now, or None where it is gone."""
    cgroup = read_cgroup_text(pid)
    try:
        sid: int | None = os.getsid(pid)
    except OSError:
        sid = None
    return cgroup, sid


def report_socket_path(state_dir: Path) -> Path:
    """``state_dir/report.sock``, or a short path under the temp dir when that is too long."""
    path = state_dir / SOCKET_NAME
    if len(str(path)) <= MAX_UNIX_PATH:
        return path
    digest = hashlib.sha1(str(state_dir.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"agentd-{digest}.sock"


def parse_line(line: str) -> dict[str, Any] | None:
    """A report message from a stdout line, or None if it is not one.

    ``AGENTD_METRIC tokens=12 loss=0.5`` -> metric; ``AGENTD_TOOL start pytest`` / ``end pytest [rc]``
    -> tool call. Values that are not numbers are skipped.
    """
    parts = line.strip().split()
    if not parts:
        return None
    if parts[0] == "AGENTD_METRIC":
        values: dict[str, float] = {}
        for item in parts[1:]:
            name, sep, value = item.partition("=")
            if not sep or not name:
                continue
            try:
                values[name] = float(value)
            except ValueError:
                continue
        return {"t": "metric", "values": values, "counters": []} if values else None
    if parts[0] == "AGENTD_TOOL" and len(parts) >= 3 and parts[1] in ("start", "end"):
        msg: dict[str, Any] = {"t": "tool", "phase": parts[1], "name": parts[2], "id": f"line-{parts[2]}"}
        if parts[1] == "end" and len(parts) >= 4:
            with contextlib.suppress(ValueError):
                msg["exit_code"] = int(parts[3])
        return msg
    return None


class ReportInbox:
    """Binds the report socket and hands out decoded messages (dicts with at least job and t).

    Malformed datagrams are counted in ``malformed`` and dropped; the first one of each kind
    is logged (``count_bad``), so a job spamming garbage cannot fill the log either.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.malformed = 0
        self.unverified = 0  # refused: the kernel could not say which process sent it
        self._logged: set[str] = set()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        with contextlib.suppress(OSError, AttributeError):
            # the kernel then tells us each sender's pid, so a process cannot report for another job
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        os.chmod(path, 0o666)  # jobs may run as other users
        self.sock.setblocking(False)
        # A reader thread takes each datagram as it arrives and notes its sender's cgroups and
        # session at once: a job's last report before it exits can still be verified then.
        self._received: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_DRAIN)
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, name="agentd-reports", daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        while not self._closed.is_set():
            try:
                ready, _, _ = select.select([self.sock], [], [], 0.2)
            except (OSError, ValueError):  # closed under us
                return
            if ready:
                self._received.extend(self._read_waiting())

    def drain(self) -> list[dict[str, Any]]:
        """Every message received since the last call (stdout lines already parsed into
        metric/tool messages), oldest first; at most MAX_DRAIN are kept between calls.

        Each carries ``sender_pid`` (from the kernel), and ``sender_cgroup`` (the text of its
        /proc/PID/cgroup) and ``sender_sid`` as read when it arrived (None when it was gone).
        """
        out: list[dict[str, Any]] = []
        while True:
            try:
                out.append(self._received.popleft())
            except IndexError:
                break
        return out + self._read_waiting()

    def _read_waiting(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for _ in range(MAX_DRAIN):
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(MAX_DATAGRAM, socket.CMSG_SPACE(_UCRED.size))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                log.debug("report socket: %s", e)
                break
            sender: int | None = None
            for level, kind, cdata in ancdata:
                if level == socket.SOL_SOCKET and kind == getattr(socket, "SCM_CREDENTIALS", -1) \
                        and len(cdata) >= _UCRED.size:
                    sender = _UCRED.unpack_from(cdata)[0]
            try:
                msg = json.loads(data)
            except (ValueError, RecursionError):
                self.count_bad("not JSON")
                continue
            if not isinstance(msg, dict) or not isinstance(msg.get("job"), str):
                self.count_bad("not an object with a job id")
                continue
            if not sender:  # no credentials, or pid 0: the sender exited before we read it
                self.unverified += 1
                self.count_bad("sender unverifiable (no credentials or the sender has exited)")
                continue
            msg["sender_pid"] = sender
            msg["sender_cgroup"], msg["sender_sid"] = _evidence(sender)
            if msg.get("t") == "line":
                parsed = parse_line(str(msg.get("line", "")))
                if parsed is None:
                    continue
                parsed["job"] = msg["job"]
                parsed["wall_s"] = msg.get("wall_s")
                parsed["sender_pid"] = sender
                parsed["sender_cgroup"], parsed["sender_sid"] = msg["sender_cgroup"], msg["sender_sid"]
                msg = parsed
            out.append(msg)
        return out

    def count_bad(self, why: str) -> None:
        """Count a dropped report; log the first of each kind."""
        self.malformed += 1
        kind = why.split(":")[0][:80]
        if kind not in self._logged and len(self._logged) < 64:
            self._logged.add(kind)
            log.warning("report socket: dropped a report (%s); further ones like it are only counted", why[:200])

    def close(self) -> None:
        self._closed.set()
        self._reader.join(2)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
