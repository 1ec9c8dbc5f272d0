"""CgroupReader against real cgroups made beneath this test's own, with a busy child inside."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agentd.telemetry.cgroup import CgroupReader
from agentd.telemetry.cgroup_paths import CgroupRef

from .conftest import wait_for

pytestmark = pytest.mark.root


def test_v1_cpuacct_memory_freezer(real_cgroups):
    paths = real_cgroups.make(["cpuacct", "memory", "freezer"])
    pid = real_cgroups.start_busy_child()
    ref = CgroupRef(version=1, paths=paths)
    reader = CgroupReader()
    first = reader.read("t", ref)
    assert first is not None
    time.sleep(0.3)
    s = reader.read("t", ref)
    assert s is not None
    assert s.cpu_usage_us - first.cpu_usage_us > 50_000  # the child spins a core
    assert s.cpu_user_us > 0
    assert s.mem_current_bytes >= 32 << 20 and s.mem_peak_bytes >= s.mem_current_bytes
    assert s.pids_current == 1 and reader.pids(ref) == {pid}
    assert s.frozen is False
    Path(paths["freezer"], "freezer.state").write_text("FROZEN")
    wait_for(lambda: (reader.read("t", ref) or s).frozen, what="v1 freezer to report FROZEN")


def test_v2_unified(real_cgroups):
    paths = real_cgroups.make(["unified"])
    pid = real_cgroups.start_busy_child()
    ref = CgroupRef(version=2, paths={"unified": paths["unified"]})
    reader = CgroupReader()
    first = reader.read("t", ref)
    assert first is not None
    time.sleep(0.3)
    s = reader.read("t", ref)
    assert s is not None
    assert s.cpu_usage_us - first.cpu_usage_us > 50_000
    assert s.cpu_user_us > 0
    assert s.pids_current == 1 and reader.pids(ref) == {pid}
    if Path(paths["unified"], "cpu.pressure").exists():
        assert "cpu" in s.pressure
    assert s.frozen is False
    Path(paths["unified"], "cgroup.freeze").write_text("1")
    wait_for(lambda: (reader.read("t", ref) or s).frozen, what="v2 cgroup.events to report frozen")
