"""CgroupReader on fixture trees (v2, v1, older v1 kernels); detect_cgroup_mode is in tests/kernel."""

from __future__ import annotations

from agentd.telemetry.cgroup import CgroupReader
from agentd.telemetry.cgroup_paths import CgroupRef


def test_v2_fixture(data_dir):
    job = data_dir / "cgroup_v2" / "fleet" / "job-1"
    s = CgroupReader().read("job-1", CgroupRef(version=2, paths={"unified": str(job)}))
    assert s is not None
    assert (s.cpu_usage_us, s.cpu_user_us, s.cpu_system_us) == (5000000, 4000000, 1000000)
    assert (s.cpu_periods_total, s.cpu_throttled_total, s.cpu_throttled_us) == (100, 25, 300000)
    assert (s.mem_current_bytes, s.mem_peak_bytes, s.mem_limit_bytes) == (104857600, 209715200, 536870912)
    assert s.oom_kills_total == 1
    assert (s.io_read_bytes, s.io_write_bytes) == (1500, 2000)
    assert s.pids_current == 2
    assert s.pressure["cpu"].some_total_us == 40000 and s.pressure["io"].full_total_us == 9
    assert s.frozen is True
    assert CgroupReader().pids(CgroupRef(version=2, paths={"unified": str(job)})) == {101, 102}


def test_v1_fixture(data_dir):
    root = data_dir / "cgroup_v1"
    ref = CgroupRef(version=1, paths={c: str(root / c / "fleet" / "job-1") for c in ("cpu", "cpuacct", "memory", "blkio", "pids", "freezer")})
    s = CgroupReader().read("job-1", ref)
    assert s is not None
    assert (s.cpu_usage_us, s.cpu_user_us, s.cpu_system_us) == (7000000, 5000000, 2000000)
    assert (s.cpu_periods_total, s.cpu_throttled_total, s.cpu_throttled_us) == (50, 5, 250000)
    assert (s.mem_current_bytes, s.mem_peak_bytes) == (104857600, 157286400)
    assert s.mem_limit_bytes is None  # v1 "unlimited" is a huge number, shown as no limit
    assert s.oom_kills_total == 3
    assert (s.io_read_bytes, s.io_write_bytes) == (5120, 8192)
    assert s.pids_current == 3 and s.frozen is True


def test_v1_older_kernel_fixture(data_dir):
    root = data_dir / "cgroup_v1"
    ref = CgroupRef(version=1, paths={c: str(root / c / "fleet" / "old-job") for c in ("cpuacct", "memory", "blkio")})
    s = CgroupReader().read("old-job", ref)
    assert s is not None
    # cpuacct.stat is in USER_HZ (100 per second)
    assert (s.cpu_usage_us, s.cpu_user_us, s.cpu_system_us) == (3000000, 1500000, 500000)
    assert s.mem_limit_bytes == 1073741824 and s.mem_peak_bytes == 1000
    assert (s.io_read_bytes, s.io_write_bytes) == (10, 20)
    assert s.pids_current == 1  # no pids controller: counted from cgroup.procs
    assert s.frozen is False


def test_gone_cgroup_is_none(tmp_path):
    assert CgroupReader().read("x", CgroupRef(version=2, paths={"unified": str(tmp_path / "gone")})) is None

