"""Readers of /proc: a process's stat, status and cgroup membership, mounts, pids, net tables.

Every reader takes ``proc_root`` (default :data:`DEFAULT_PROC_ROOT`) so tests can point it at
a fixture tree, and answers None (or an empty result) when the file is gone or malformed: a
process may exit between listing and reading.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterable
from typing import NamedTuple

from agentd.kernel.files import StrPath, read_bytes, read_text
from agentd.kernel.psi import PRESSURE_RESOURCES, PressureValues, parse_pressure

DEFAULT_PROC_ROOT = "/proc"
#: Fields of /proc/PID/stat after the ``(comm)`` that we use (up to rss, the 24th field);
#: the rest (about 30 more) are left unsplit.
STAT_FIELDS_NEEDED = 22
_TCP_ESTABLISHED = "01"
_SOCK_STREAM = 1
_SS_CONNECTED = 3
#: Super options of a v1 cgroup mount that are not controller names.
_CGROUP_V1_FLAGS = frozenset({"rw", "ro", "xattr", "clone_children", "cpuset_v2_mode"})

__all__ = [
    "DEFAULT_PROC_ROOT",
    "Mount",
    "ProcStat",
    "TcpConnection",
    "UnixSocket",
    "boot_time_s",
    "cgroup_mounts",
    "fd_target",
    "list_fds",
    "list_pids",
    "parse_cgroup_membership",
    "parse_meminfo",
    "parse_mountinfo",
    "parse_stat",
    "read_cgroup_membership",
    "read_cgroup_text",
    "read_comm",
    "read_host_pressure",
    "read_meminfo",
    "read_mountinfo",
    "read_resident_pages",
    "read_stat",
    "read_status",
    "read_tcp_established",
    "read_unix_sockets",
    "statm_resident_pages",
]


def _pid_dir(proc_root: StrPath, pid: int | str) -> str:
    return os.path.join(proc_root, str(pid))


def _read_paths_file(path: str) -> str | None:
    """A file that holds paths (cgroup, mountinfo, net/unix): UTF-8, since paths may be any
    bytes and are compared with real ones."""
    data = read_bytes(path)
    return None if data is None else data.decode(errors="replace")


# ---- /proc/PID/stat ----------------------------------------------------------------------

class ProcStat(NamedTuple):
    """The fields of /proc/PID/stat that agentd uses. Times are in clock ticks (SC_CLK_TCK)."""

    comm: str
    state: str
    ppid: int
    pgrp: int
    session: int
    utime_ticks: int
    stime_ticks: int
    nice: int
    start_ticks: int
    rss_pages: int


def parse_stat(data: bytes) -> ProcStat | None:
    """Parse the text of /proc/PID/stat; None when it is truncated or malformed."""
    # The name is between the first "(" and the LAST ")": it may itself contain ")".
    left, right = data.find(b"("), data.rfind(b")")
    if left < 0 or right < left:
        return None
    rest = data[right + 2:].split(None, STAT_FIELDS_NEEDED)
    if len(rest) < STAT_FIELDS_NEEDED:
        return None
    try:
        return ProcStat(
            comm=data[left + 1:right].decode(errors="replace"),
            state=rest[0].decode(errors="replace"),
            ppid=int(rest[1]), pgrp=int(rest[2]), session=int(rest[3]),
            utime_ticks=int(rest[11]), stime_ticks=int(rest[12]), nice=int(rest[16]),
            start_ticks=int(rest[19]), rss_pages=int(rest[21]),
        )
    except ValueError:
        return None


def read_stat(pid: int | str, proc_root: StrPath = DEFAULT_PROC_ROOT) -> ProcStat | None:
    """/proc/PID/stat of ``pid`` (or ``"self"``); None when the process is gone."""
    data = read_bytes(os.path.join(_pid_dir(proc_root, pid), "stat"))
    return None if data is None else parse_stat(data)


def read_status(pid: int | str, proc_root: StrPath = DEFAULT_PROC_ROOT) -> dict[str, str] | None:
    """/proc/PID/status as ``{key: value}`` (values stripped, unparsed); None when gone."""
    text = read_text(os.path.join(_pid_dir(proc_root, pid), "status"))
    if text is None:
        return None
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key] = value.strip()
    return out


def read_comm(pid: int | str, proc_root: StrPath = DEFAULT_PROC_ROOT) -> str | None:
    """The kernel's short command name of ``pid``; None when it is gone."""
    text = read_text(os.path.join(_pid_dir(proc_root, pid), "comm"))
    return None if text is None else text.strip()


def fd_target(pid: int | str, fd: int | str, proc_root: StrPath = DEFAULT_PROC_ROOT) -> str | None:
    """What file descriptor ``fd`` of ``pid`` points at (``pipe:[123]``, a path); None when gone."""
    try:
        return os.readlink(os.path.join(_pid_dir(proc_root, pid), "fd", str(fd)))
    except OSError:
        return None


def statm_resident_pages(data: bytes) -> int | None:
    """Resident pages from the text of /proc/PID/statm (its 2nd field); None when malformed.

    Takes the bytes, not a pid, so a caller polling its own RSS can ``pread`` an open file."""
    fields = data.split()
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None


def read_resident_pages(pid: int | str = "self", proc_root: StrPath = DEFAULT_PROC_ROOT) -> int | None:
    """Resident set size of ``pid`` in pages (/proc/PID/statm); None when it is gone."""
    data = read_bytes(os.path.join(_pid_dir(proc_root, pid), "statm"))
    return None if data is None else statm_resident_pages(data)


def list_fds(pid: int | str = "self", proc_root: StrPath = DEFAULT_PROC_ROOT) -> list[int] | None:
    """The open file descriptors of ``pid``; None when they cannot be listed."""
    try:
        names = os.listdir(os.path.join(_pid_dir(proc_root, pid), "fd"))
    except OSError:
        return None
    return [int(n) for n in names if n.isdigit()]


def list_pids(proc_root: StrPath = DEFAULT_PROC_ROOT) -> list[int] | None:
    """Every pid under ``proc_root`` (unsorted); None when it cannot be listed."""
    try:
        names = os.listdir(proc_root)
    except OSError:
        return None
    return [int(n) for n in names if n.isdigit()]


# ---- /proc/PID/cgroup --------------------------------------------------------------------

def parse_cgroup_membership(text: str) -> dict[str, str]:
    """Map each controller of /proc/PID/cgroup text to its cgroup path; ``""`` is the v2 path.

    ``4:cpu,cpuacct:/a`` gives ``{"cpu": "/a", "cpuacct": "/a"}``; named hierarchies keep
    their name (``name=systemd``). Malformed lines are skipped.
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        if not ctrls:
            out[""] = path
        for c in ctrls.split(","):
            if c:
                out[c] = path
    return out


def read_cgroup_text(pid: int | str, proc_root: StrPath = DEFAULT_PROC_ROOT) -> str | None:
    """The raw text of /proc/PID/cgroup; None when the process is gone."""
    return _read_paths_file(os.path.join(_pid_dir(proc_root, pid), "cgroup"))


def read_cgroup_membership(pid: int | str = "self", proc_root: StrPath = DEFAULT_PROC_ROOT) -> dict[str, str] | None:
    """:func:`parse_cgroup_membership` of ``pid``'s /proc/PID/cgroup; None when it is gone."""
    text = read_cgroup_text(pid, proc_root)
    return None if text is None else parse_cgroup_membership(text)


# ---- mounts ------------------------------------------------------------------------------

class Mount(NamedTuple):
    """One line of /proc/PID/mountinfo."""

    mount_point: str
    root: str
    fstype: str
    source: str
    super_options: tuple[str, ...]


def _unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (``\\040`` is a space)."""
    if "\\" not in field:
        return field
    try:
        return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="replace")
    except (UnicodeDecodeError, UnicodeEncodeError):
        return field


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse /proc/PID/mountinfo text; malformed lines are skipped."""
    out: list[Mount] = []
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields, post_fields = pre.split(), post.split()
        if len(fields) < 5 or len(post_fields) < 3:
            continue
        out.append(Mount(mount_point=_unescape(fields[4]), root=_unescape(fields[3]),
                         fstype=post_fields[0], source=_unescape(post_fields[1]),
                         super_options=tuple(post_fields[2].split(","))))
    return out


def read_mountinfo(pid: int | str = "self", proc_root: StrPath = DEFAULT_PROC_ROOT) -> list[Mount] | None:
    """The mounts seen by ``pid``; None when its mountinfo cannot be read."""
    text = _read_paths_file(os.path.join(_pid_dir(proc_root, pid), "mountinfo"))
    return None if text is None else parse_mountinfo(text)


def cgroup_mounts(mounts: Iterable[Mount]) -> dict[str, str]:
    """Mount point of each cgroup v1 controller and of the v2 tree (key ``unified``); the
    first mount of each wins."""
    out: dict[str, str] = {}
    for m in mounts:
        if m.fstype == "cgroup2":
            out.setdefault("unified", m.mount_point)
        elif m.fstype == "cgroup":
            for opt in m.super_options:
                # name=..., release_agent=..., no* and a few flags are options, not controllers
                if opt not in _CGROUP_V1_FLAGS and "=" not in opt and not opt.startswith("no"):
                    out.setdefault(opt, m.mount_point)
    return out


# ---- host-wide files ---------------------------------------------------------------------

def boot_time_s(proc_root: StrPath = DEFAULT_PROC_ROOT) -> float | None:
    """Boot time in Unix seconds (``btime`` of /proc/stat); None when unreadable."""
    for line in (read_text(os.path.join(proc_root, "stat")) or "").splitlines():
        if line.startswith("btime "):
            try:
                return float(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as ``{key: bytes}`` (values with a ``kB`` unit are converted; unitless
    ones such as ``HugePages_Total`` are counts)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        f = rest.split()
        if f:
            try:
                out[key] = int(f[0]) * (1024 if len(f) > 1 and f[1] == "kB" else 1)
            except ValueError:
                pass
    return out


def read_meminfo(proc_root: StrPath = DEFAULT_PROC_ROOT) -> dict[str, int] | None:
    """:func:`parse_meminfo` of ``proc_root``/meminfo; None when unreadable."""
    text = read_text(os.path.join(proc_root, "meminfo"))
    return None if text is None else parse_meminfo(text)


def read_host_pressure(proc_root: StrPath = DEFAULT_PROC_ROOT) -> dict[str, PressureValues]:
    """/proc/pressure/{cpu,memory,io} by resource; a resource without a file is left out."""
    out: dict[str, PressureValues] = {}
    for res in PRESSURE_RESOURCES:
        text = read_text(os.path.join(proc_root, "pressure", res))
        if text:
            out[res] = parse_pressure(text)
    return out


# ---- network tables (this network namespace) ---------------------------------------------

class TcpConnection(NamedTuple):
    """One established socket of /proc/net/tcp or tcp6; IPv4-mapped addresses read as IPv4."""

    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    uid: int
    inode: int


def _decode_addr(hex_addr: str) -> tuple[str, int]:
    """``0100007F:1E1E`` or the 32-hex-digit IPv6 form -> (ip, port). Raises ValueError."""
    host, _, port = hex_addr.partition(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(host, 16)))
    elif len(raw) == 16:
        words = struct.unpack("<4I", raw)
        ip = socket.inet_ntop(socket.AF_INET6, struct.pack(">4I", *words))
        mapped = ipaddress.IPv6Address(ip).ipv4_mapped
        if mapped is not None:
            ip = str(mapped)
    else:
        raise ValueError(f"address {hex_addr!r} is neither IPv4 nor IPv6")
    return ip, int(port, 16)


def read_tcp_established(proc_root: StrPath = DEFAULT_PROC_ROOT) -> list[TcpConnection]:
    """Every established TCP socket of /proc/net/tcp and tcp6; malformed rows are skipped."""
    out: list[TcpConnection] = []
    for name in ("tcp", "tcp6"):
        text = read_text(os.path.join(proc_root, "net", name))
        for line in (text or "").splitlines()[1:]:
            f = line.split()
            if len(f) < 10 or f[3] != _TCP_ESTABLISHED:
                continue
            try:
                (lip, lport), (rip, rport) = _decode_addr(f[1]), _decode_addr(f[2])
                out.append(TcpConnection(lip, lport, rip, rport, int(f[7]), int(f[9])))
            except ValueError:
                continue
    return out


class UnixSocket(NamedTuple):
    """One row of /proc/net/unix that has a path."""

    inode: int
    type: int
    state: int
    path: str

    @property
    def connected_stream(self) -> bool:
        """A connected SOCK_STREAM socket (an accepted one shows its listener's path)."""
        return self.type == _SOCK_STREAM and self.state == _SS_CONNECTED


def read_unix_sockets(proc_root: StrPath = DEFAULT_PROC_ROOT) -> list[UnixSocket]:
    """Unix sockets with a path from /proc/net/unix; malformed rows are skipped."""
    out: list[UnixSocket] = []
    for line in (_read_paths_file(os.path.join(proc_root, "net", "unix")) or "").splitlines()[1:]:
        f = line.split()
        # Num RefCount Protocol Flags Type St Inode [Path]
        if len(f) != 8:
            continue
        try:
            out.append(UnixSocket(inode=int(f[6]), type=int(f[4], 16), state=int(f[5], 16), path=f[7]))
        except ValueError:
            continue
    return out
