"""Fixtures of the telemetry tests: fixture trees, a fresh fake pynvml, real cgroups."""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.waiting import wait_for  # noqa: F401 - the tests import it from here

DATA = Path(__file__).resolve().parent.parent / "data"
FAKE_NVML = Path(__file__).resolve().parent.parent / "fake_nvml" / "pynvml.py"
CGROUP_ROOT = Path("/sys/fs/cgroup")
_counter = itertools.count()


@pytest.fixture
def data_dir() -> Path:
    return DATA


def load_fake_nvml() -> ModuleType:
    """A fresh copy of the fake pynvml (its state is module-global, like the real one's)."""
    name = f"fake_pynvml_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, FAKE_NVML)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the error classes are generated through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_nvml() -> Iterator[ModuleType]:
    module = load_fake_nvml()
    yield module
    sys.modules.pop(module.__name__, None)


def own_cgroup_paths() -> dict[str, str]:
    """This process's cgroup in each hierarchy: controller (or "unified") -> path."""
    out: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            out["unified"] = path
        for c in controllers.split(","):
            if c:
                out[c] = path
    return out


BUSY_CHILD = (
    "import sys\n"
    "sys.stdin.readline()\n"  # wait until moved into the cgroups, so memory is charged there
    "b = bytearray(32 << 20)\n"
    "for i in range(0, len(b), 4096): b[i] = 1\n"
    "print('ready', flush=True)\n"
    "while True: pass\n"
)


class RealCgroups:
    """Cgroups made beneath this process's own ones, with a busy child moved in."""

    def __init__(self) -> None:
        self.dirs: dict[str, Path] = {}
        self.child: subprocess.Popen[str] | None = None

    def make(self, hierarchies: list[str]) -> dict[str, str]:
        own = own_cgroup_paths()
        name = f"fleetdeck-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        for h in hierarchies:
            base = CGROUP_ROOT / h / own.get(h, "/").lstrip("/")
            if not (base / "cgroup.procs").exists():
                pytest.skip(f"cgroup hierarchy {h} not available at {base}")
            d = base / name
            d.mkdir()
            self.dirs[h] = d
        return {h: str(d) for h, d in self.dirs.items()}

    def start_busy_child(self) -> int:
        self.child = subprocess.Popen(
            [sys.executable, "-c", BUSY_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for d in self.dirs.values():
            (d / "cgroup.procs").write_text(str(self.child.pid))
        assert self.child.stdin is not None and self.child.stdout is not None
        self.child.stdin.write("go\n")
        self.child.stdin.flush()
        line = self.child.stdout.readline()  # bounded by the test timeout; the child prints at once
        assert line.strip() == "ready", line
        return self.child.pid

    def cleanup(self) -> None:
        for h, d in self.dirs.items():
            # Never leave a frozen cgroup behind: a frozen child cannot exit cleanly.
            if h == "unified" and (d / "cgroup.freeze").exists():
                (d / "cgroup.freeze").write_text("0")
            if h == "freezer" and (d / "freezer.state").exists():
                (d / "freezer.state").write_text("THAWED")
        if self.child is not None:
            self.child.kill()
            self.child.wait(timeout=10)
            for stream in (self.child.stdin, self.child.stdout):
                if stream is not None:
                    stream.close()
        for d in self.dirs.values():
            deadline = time.monotonic() + 5
            while d.exists():
                try:
                    d.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)


@pytest.fixture
def real_cgroups() -> Iterator[RealCgroups]:
    if os.geteuid() != 0:
        pytest.skip("real cgroups need root")
    cg = RealCgroups()
    try:
        yield cg
    finally:
        cg.cleanup()
