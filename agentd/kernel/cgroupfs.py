"""Readers of cgroupfs, v2 (one unified tree) and v1 (one tree per controller).

Readers only: frozen state, controllers, member pids, flat stat files, pressure, and where
the hierarchies are mounted. Every reader takes the cgroup directory (or ``cgroup_root``) it
reads, and answers None (or an empty result) when the cgroup is gone or a file is malformed.
Writes (mkdir, freeze, moving pids, limits) are in :mod:`agentd.control.cgroups`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from agentd.kernel.files import StrPath, parse_keyed, read_text
from agentd.kernel.procfs import DEFAULT_PROC_ROOT, read_cgroup_text
from agentd.kernel.psi import PRESSURE_RESOURCES, PressureValues, parse_pressure

DEFAULT_CGROUP_ROOT = "/sys/fs/cgroup"
#: The v1 controller hierarchies agentd uses.
V1_CONTROLLERS: tuple[str, ...] = ("cpu", "cpuacct", "memory", "blkio", "pids", "freezer")
#: v1 freezer.state values.
V1_FROZEN, V1_FREEZING, V1_THAWED = "FROZEN", "FREEZING", "THAWED"

__all__ = [
    "DEFAULT_CGROUP_ROOT",
    "V1_CONTROLLERS",
    "V1_FREEZING",
    "V1_FROZEN",
    "V1_THAWED",
    "controllers",
    "count_procs",
    "detect_cgroup_mode",
    "has_v2_freeze",
    "is_frozen",
    "is_v2",
    "parse_blkio_bytes",
    "parse_io_stat",
    "procs",
    "read_pressure",
    "tree_pids",
    "v1_freezer_state",
    "v1_mount",
    "v2_frozen",
]


# ---- membership --------------------------------------------------------------------------

def _pids_of(text: str) -> list[int] | None:
    try:
        return [int(x) for x in text.split()]
    except ValueError:
        return None


def procs(directory: StrPath) -> list[int] | None:
    """The pids in ``cgroup.procs`` of this one cgroup (not its children); None when gone."""
    text = read_text(os.path.join(directory, "cgroup.procs"))
    return None if text is None else _pids_of(text)


def count_procs(directory: StrPath) -> int | None:
    """How many processes this one cgroup holds; None when gone."""
    got = procs(directory)
    return None if got is None else len(got)


def tree_pids(directory: StrPath) -> set[int]:
    """Every pid in this cgroup and all cgroups below it (tool-call children); empty when gone."""
    found: set[int] = set()
    if not os.path.isdir(directory):
        return found
    for dirpath, _dirs, _files in os.walk(directory):
        found.update(procs(dirpath) or ())
    return found


# ---- layout ------------------------------------------------------------------------------

def controllers(directory: StrPath) -> set[str] | None:
    """The v2 controllers offered to this cgroup (``cgroup.controllers``); None when not v2."""
    text = read_text(os.path.join(directory, "cgroup.controllers"))
    return None if text is None else set(text.split())


def is_v2(directory: StrPath) -> bool:
    """Whether ``directory`` is a cgroup v2 cgroup (or the root of a cgroup2 mount)."""
    return os.path.exists(os.path.join(directory, "cgroup.controllers"))


def v1_mount(cgroup_root: StrPath, controller: str) -> str | None:
    """Where the v1 ``controller`` hierarchy is mounted under ``cgroup_root``: its own
    directory or a co-mounted one (``cpu,cpuacct``); None when it has none."""
    candidates = [os.path.join(cgroup_root, controller)]
    try:
        names = sorted(os.listdir(cgroup_root))
    except OSError:
        return None
    candidates += [os.path.join(cgroup_root, n) for n in names if controller in n.split(",")]
    for c in candidates:
        if os.path.exists(os.path.join(c, "tasks")):
            return c
    return None


def detect_cgroup_mode(cgroup_root: StrPath = DEFAULT_CGROUP_ROOT, proc_root: StrPath = DEFAULT_PROC_ROOT) -> str:
    """Which cgroup layout this host has: ``"v2"``, ``"v1"``, ``"hybrid"`` or ``"none"``.

    ``cgroup_root`` being a cgroup2 mount means v2. v1 controller hierarchies under it mean
    v1, or hybrid when a v2 tree is also mounted at ``cgroup_root/unified``. Without a
    readable ``cgroup_root`` this process's own ``proc_root/self/cgroup`` decides: only a
    ``0::`` line is v2, numbered hierarchies v1, both hybrid.
    """
    if is_v2(cgroup_root):
        return "v2"
    has_v1 = any(os.path.exists(os.path.join(cgroup_root, c, "cgroup.procs")) for c in V1_CONTROLLERS)
    if has_v1:
        return "hybrid" if is_v2(os.path.join(cgroup_root, "unified")) else "v1"
    lines = [line for line in (read_cgroup_text("self", proc_root) or "").splitlines() if line.strip()]
    v2_line = any(line.startswith("0::") for line in lines)
    v1_lines = any(not line.startswith("0::") for line in lines)
    if v2_line and v1_lines:
        return "hybrid"
    if v2_line:
        return "v2"
    return "v1" if v1_lines else "none"


# ---- freezer -----------------------------------------------------------------------------

def v1_freezer_state(directory: StrPath) -> str | None:
    """``FROZEN``, ``FREEZING`` or ``THAWED`` from a v1 ``freezer.state``; None when gone."""
    text = read_text(os.path.join(directory, "freezer.state"))
    return None if text is None else text.strip()


def v2_frozen(directory: StrPath) -> bool | None:
    """The ``frozen`` key of a v2 ``cgroup.events``; None when gone or the kernel has no
    v2 freezer (before 5.2)."""
    text = read_text(os.path.join(directory, "cgroup.events"))
    if text is None:
        return None
    value = parse_keyed(text).get("frozen")
    return None if value is None else value == 1


def has_v2_freeze(directory: StrPath) -> bool:
    """Whether this v2 cgroup can be frozen (``cgroup.freeze`` exists)."""
    return os.path.exists(os.path.join(directory, "cgroup.freeze"))


def is_frozen(paths: Mapping[str, StrPath]) -> bool | None:
    """Whether a cgroup given by hierarchy (``freezer`` for v1, ``unified`` for v2 or the
    hybrid tree) is frozen. The v1 freezer decides where there is one, else ``unified``;
    None when neither can be read."""
    freezer = paths.get("freezer")
    if freezer is not None:
        state = v1_freezer_state(freezer)
        if state is not None:
            return state == V1_FROZEN
    unified = paths.get("unified")
    return v2_frozen(unified) if unified is not None else None


# ---- stat files and pressure -------------------------------------------------------------

def read_pressure(directory: StrPath) -> dict[str, PressureValues]:
    """``{cpu,memory,io}.pressure`` of a v2 cgroup by resource; absent files are left out."""
    out: dict[str, PressureValues] = {}
    for res in PRESSURE_RESOURCES:
        text = read_text(os.path.join(directory, f"{res}.pressure"))
        if text:
            out[res] = parse_pressure(text)
    return out


def parse_io_stat(text: str) -> tuple[int, int]:
    """(read bytes, written bytes) summed over devices of a v2 ``io.stat``."""
    rbytes = wbytes = 0
    for line in text.splitlines():
        for kv in line.split()[1:]:
            key, _, val = kv.partition("=")
            if key in ("rbytes", "wbytes") and val.isdigit():
                if key == "rbytes":
                    rbytes += int(val)
                else:
                    wbytes += int(val)
    return rbytes, wbytes


def parse_blkio_bytes(text: str) -> tuple[int, int]:
    """(read bytes, written bytes) summed over devices of a v1
    ``blkio.throttle.io_service_bytes[_recursive]``."""
    rbytes = wbytes = 0
    for line in text.splitlines():
        f = line.split()
        if len(f) == 3 and f[2].isdigit():
            if f[1] == "Read":
                rbytes += int(f[2])
            elif f[1] == "Write":
                wbytes += int(f[2])
    return rbytes, wbytes

