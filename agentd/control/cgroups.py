"""The write side of cgroupfs: job cgroups beneath the daemon's own cgroup — create,
freeze/thaw, weights, limits, kill, remove.

Every read (frozen state, member pids, offered controllers, mounts, /proc/PID/cgroup) goes
through :mod:`agentd.kernel.cgroupfs` and :mod:`agentd.kernel.procfs`; this module only adds
the writes and the waiting for the kernel to apply them.

Layouts, in order of preference:
- cgroup v2 at ``root`` when ``root`` itself is a cgroup2 mount (pure v2 host, or a test that
  points ``root`` at ``/sys/fs/cgroup/unified``), or at ``root/unified`` when the daemon's own
  v2 cgroup there offers the cpu and memory controllers (a delegated subtree);
- cgroup v1, one directory per controller hierarchy (cpu, cpuacct, memory, blkio, pids,
  freezer), plus the hybrid v2 mount (``unified``) for pressure files when it is writable;
- none (the caller falls back to process-group control).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from agentd.kernel import cgroupfs
from agentd.kernel.cgroupfs import V1_CONTROLLERS
from agentd.kernel.procfs import DEFAULT_PROC_ROOT, read_cgroup_membership
from agentd.telemetry.cgroup_paths import CgroupRef

log = logging.getLogger(__name__)

V2_WANTED_CONTROLLERS: tuple[str, ...] = ("cpu", "memory", "io", "pids")
FREEZE_TIMEOUT_S = 5.0
POLL_S = 0.002

# Priority -> weight: each step is x1.25 (like one nice level), so +5 vs -5 is ~9:1.
WEIGHT_STEP = 1.25
V1_SHARES_DEFAULT = 1024
V2_WEIGHT_DEFAULT = 100
V1_BLKIO_DEFAULT = 500
CFS_PERIOD_US = 100_000


def priority_weight(priority: int, default: int, lo: int, hi: int) -> int:
    """The cgroup weight for a job priority (-10..10) on a scale whose neutral value is ``default``."""
    return max(lo, min(hi, round(default * WEIGHT_STEP ** priority)))


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _try_write(path: Path, value: str) -> bool:
    try:
        _write(path, value)
        return True
    except OSError as e:
        log.debug("could not write %r to %s: %s", value, path, e)
        return False


@dataclass
class JobCgroup:
    """One job's cgroup directories (v2: key ``unified``; v1: one per controller)."""

    version: int
    paths: dict[str, Path] = field(default_factory=dict)

    # ---- identity --------------------------------------------------------------------
    def ref(self) -> CgroupRef:
        return CgroupRef(version=self.version, paths={k: str(v) for k, v in self.paths.items()})

    def main_path(self) -> str:
        """The path shown to users: the v2 dir, or the v1 freezer/cpu dir."""
        for key in ("unified", "freezer", "cpu", "memory"):
            if key in self.paths and (self.version == 2 or key != "unified"):
                return str(self.paths[key])
        return str(next(iter(self.paths.values())))

    def _hierarchies(self) -> list[Path]:
        return list(self.paths.values())

    def procs_files(self) -> list[str]:
        """Files a process writes its pid to so that it enters this cgroup everywhere."""
        return [str(p / "cgroup.procs") for p in self._hierarchies()]

    # ---- membership ------------------------------------------------------------------
    def _membership_hierarchies(self) -> list[Path]:
        """Where to list members: every v1 process is in every hierarchy, so one suffices."""
        if self.version == 1:
            for key in ("freezer", "pids", "cpu", "memory"):
                if key in self.paths and self.paths[key].is_dir():
                    return [self.paths[key]]
        return self._hierarchies()

    def pids(self) -> set[int]:
        """Every process in this cgroup or any child cgroup (tool calls), in any hierarchy."""
        found: set[int] = set()
        for base in self._membership_hierarchies():
            found |= cgroupfs.tree_pids(base)
        return found

    def exists(self) -> bool:
        return any(p.is_dir() for p in self._hierarchies())

    # ---- freezer ---------------------------------------------------------------------
    def has_freezer(self) -> bool:
        """Whether this cgroup can be frozen (a v1 freezer or a v2 ``cgroup.freeze``)."""
        if self.version == 1 and "freezer" in self.paths:
            return True
        return "unified" in self.paths and cgroupfs.has_v2_freeze(self.paths["unified"])

    def is_frozen(self) -> bool:
        """Whether the kernel reports this cgroup frozen. Raises OSError when it cannot be read."""
        paths = self.paths if self.version == 1 else {"unified": self.paths["unified"]}
        frozen = cgroupfs.is_frozen(paths)
        if frozen is None:
            raise FileNotFoundError(f"cgroup {self.main_path()} has no readable freezer state")
        return frozen

    def set_frozen(self, frozen: bool, timeout_s: float = FREEZE_TIMEOUT_S) -> None:
        """Freeze or thaw; returns once the kernel reports the new state. Raises TimeoutError."""
        deadline = time.monotonic() + timeout_s
        if self.version == 1 and "freezer" in self.paths:
            state_file = self.paths["freezer"] / "freezer.state"
            want = cgroupfs.V1_FROZEN if frozen else cgroupfs.V1_THAWED
            _write(state_file, want)
            while True:
                got = cgroupfs.v1_freezer_state(self.paths["freezer"])
                if got == want:
                    return
                if got is None:
                    raise FileNotFoundError(f"cgroup {self.paths['freezer']} is gone (no freezer.state)")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"cgroup {self.paths['freezer']} reads {got}, not {want}")
                if frozen and got == cgroupfs.V1_FREEZING:
                    # v1 needs the request repeated to retry tasks that were busy in the kernel
                    _try_write(state_file, want)
                time.sleep(POLL_S)
        base = self.paths["unified"]
        _write(base / "cgroup.freeze", "1" if frozen else "0")
        while (got_v2 := cgroupfs.v2_frozen(base)) != frozen:
            if got_v2 is None:
                raise FileNotFoundError(f"cgroup {base} is gone (no frozen key in cgroup.events)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"cgroup {base} did not report 'frozen {int(frozen)}'")
            time.sleep(POLL_S)

    # ---- weights and limits ----------------------------------------------------------
    def has_cpu_weight(self) -> bool:
        """Whether CPU weights work here (v2 needs the cpu controller enabled above the job)."""
        if self.version == 2:
            return (self.paths["unified"] / "cpu.weight").exists()
        return "cpu" in self.paths

    def set_priority(self, priority: int) -> None:
        """CPU and IO weight from a job priority (best effort: IO weight needs an IO scheduler)."""
        if self.version == 2:
            base = self.paths["unified"]
            _try_write(base / "cpu.weight", str(priority_weight(priority, V2_WEIGHT_DEFAULT, 1, 10000)))
            if (base / "io.weight").exists():
                _try_write(base / "io.weight", f"default {priority_weight(priority, V2_WEIGHT_DEFAULT, 1, 10000)}")
            return
        if "cpu" in self.paths:
            _try_write(self.paths["cpu"] / "cpu.shares",
                       str(priority_weight(priority, V1_SHARES_DEFAULT, 2, 262144)))
        if "blkio" in self.paths:
            weight = str(priority_weight(priority, V1_BLKIO_DEFAULT, 10, 1000))
            for name in ("blkio.weight", "blkio.bfq.weight"):
                if (self.paths["blkio"] / name).exists():
                    _try_write(self.paths["blkio"] / name, weight)

    def set_limits(self, cpus: float | None, memory_bytes: int | None) -> None:
        """Apply the spec's CPU quota and memory limit where the controller exists."""
        if self.version == 2:
            base = self.paths["unified"]
            if cpus:
                _try_write(base / "cpu.max", f"{int(cpus * CFS_PERIOD_US)} {CFS_PERIOD_US}")
            if memory_bytes:
                _try_write(base / "memory.max", str(memory_bytes))
            return
        if cpus and "cpu" in self.paths:
            _try_write(self.paths["cpu"] / "cpu.cfs_period_us", str(CFS_PERIOD_US))
            _try_write(self.paths["cpu"] / "cpu.cfs_quota_us", str(int(cpus * CFS_PERIOD_US)))
        if memory_bytes and "memory" in self.paths:
            _try_write(self.paths["memory"] / "memory.limit_in_bytes", str(memory_bytes))

    # ---- signals and removal ---------------------------------------------------------
    def signal_all(self, sig: int) -> int:
        """Send ``sig`` to every process in the cgroup tree; returns how many were signalled."""
        n = 0
        for pid in self.pids():
            try:
                os.kill(pid, sig)
                n += 1
            except ProcessLookupError:
                pass
        return n

    def kill_all(self, timeout_s: float = FREEZE_TIMEOUT_S) -> bool:
        """SIGKILL everything, freezing first so nothing forks in between; True once empty."""
        deadline = time.monotonic() + timeout_s
        while True:
            pids = self.pids()
            if not pids:
                return True
            if self.version == 2 and (self.paths["unified"] / "cgroup.kill").exists():
                _try_write(self.paths["unified"] / "cgroup.kill", "1")
            else:
                frozen = False
                if self.has_freezer():
                    try:
                        self.set_frozen(True, timeout_s=0.5)
                        frozen = True
                    except (OSError, TimeoutError):
                        pass
                self.signal_all(signal.SIGKILL)
                if frozen or self.has_freezer():
                    try:
                        self.set_frozen(False, timeout_s=0.5)
                    except (OSError, TimeoutError):
                        pass
            if time.monotonic() > deadline:
                return not self.pids()
            time.sleep(0.01)

    def remove(self, timeout_s: float = 2.0) -> bool:
        """Remove the cgroup and its children in every hierarchy; True when all are gone."""
        deadline = time.monotonic() + timeout_s
        ok = True
        for base in self._hierarchies():
            if not base.is_dir():
                continue
            dirs = [Path(d) for d, _s, _f in os.walk(base)]
            for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
                while True:
                    try:
                        os.rmdir(d)
                        break
                    except FileNotFoundError:
                        break
                    except OSError as e:
                        # EBUSY while the last processes are being reaped
                        if e.errno != errno.EBUSY or time.monotonic() > deadline:
                            log.warning("could not remove cgroup %s: %s", d, e)
                            ok = False
                            break
                        time.sleep(0.01)
        return ok


@dataclass
class CgroupLayout:
    """Where this daemon puts job cgroups: ``<own cgroup>/agentd-<node>`` in each hierarchy."""

    version: int
    bases: dict[str, Path]

    @property
    def control(self) -> str:
        return f"cgroup-v{self.version}"

    def create(self, name: str) -> JobCgroup:
        """Create the cgroup ``name`` (e.g. ``job-3``) in every hierarchy. Raises OSError."""
        paths: dict[str, Path] = {}
        for key, base in self.bases.items():
            path = base / name
            try:
                path.mkdir(exist_ok=True)
            except OSError:
                if key == "unified" and self.version == 1:
                    continue  # the hybrid extra is optional
                for made in paths.values():
                    _try_rmdir(made)
                raise
            paths[key] = path
        return JobCgroup(version=self.version, paths=paths)

    def adopt(self, ref: CgroupRef) -> JobCgroup:
        return JobCgroup(version=ref.version, paths={k: Path(v) for k, v in ref.paths.items()})


def _try_rmdir(path: Path) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def _mkdir_writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        return os.access(path / "cgroup.procs", os.W_OK)
    except OSError as e:
        log.debug("cannot create cgroup %s: %s", path, e)
        return False


def detect_layout(root: Path, node: str, proc_root: str = DEFAULT_PROC_ROOT) -> CgroupLayout | None:
    """Find or create this daemon's cgroup subtree (from ``proc_root``/self/cgroup); None when
    no cgroup is writable."""
    own = read_cgroup_membership("self", proc_root)
    if own is None:
        return None
    sub = f"agentd-{node}"
    if cgroupfs.is_v2(root):
        return _v2_layout(root, own.get("", "/"), sub)
    unified = root / "unified"
    if cgroupfs.is_v2(unified) and "" in own:
        own_dir = unified / own[""].lstrip("/")
        offered = cgroupfs.controllers(own_dir) or set()
        if {"cpu", "memory"} <= offered:
            layout = _v2_layout(unified, own[""], sub)
            if layout is not None:
                return layout
    bases: dict[str, Path] = {}
    for ctrl in V1_CONTROLLERS:
        mount = cgroupfs.v1_mount(root, ctrl)
        if mount is None or ctrl not in own:
            continue
        base = Path(mount) / own[ctrl].lstrip("/") / sub
        if _mkdir_writable(base):
            bases[ctrl] = base
    if not bases:
        return None
    if cgroupfs.is_v2(unified) and "" in own:
        base = unified / own[""].lstrip("/") / sub
        if _mkdir_writable(base):
            bases["unified"] = base
    return CgroupLayout(version=1, bases=bases)


def _v2_layout(mount: Path, own_path: str, sub: str) -> CgroupLayout | None:
    own_dir = mount / own_path.lstrip("/")
    base = own_dir / sub
    if not _mkdir_writable(base):
        return None
    # Enable what the daemon was given for the job cgroups below ``base``; works where the own
    # cgroup is the root or a delegated cgroup with no processes of its own (best effort).
    offered = cgroupfs.controllers(own_dir) or set()
    wanted = [c for c in V2_WANTED_CONTROLLERS if c in offered]
    if wanted:
        _try_write(own_dir / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        _try_write(base / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
    return CgroupLayout(version=2, bases={"unified": base})


def remove_layout(layout: CgroupLayout) -> None:
    """Remove the daemon's ``agentd-<node>`` dirs where empty (a dir with live job cgroups stays)."""
    for base in layout.bases.values():
        _try_rmdir(base)
