"""HostReader and host_identity on a fixture tree and on the real host."""

from __future__ import annotations

import os

import pytest

from agentd.telemetry.host import HostReader, host_identity, parse_pressure


def test_fixture_host_sample(data_dir):
    s = HostReader(str(data_dir / "proc"), str(data_dir / "sys")).read()
    tck = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    assert s.cpu_total.user_s == pytest.approx(10000 / tck)
    assert s.cpu_total.idle_s == pytest.approx(80000 / tck)
    assert s.cpu_total.steal_s == pytest.approx(50 / tck)
    assert len(s.cpu_per_core) == 2 and s.cpu_per_core[1].system_s == pytest.approx(1500 / tck)
    assert (s.load_1, s.load_5, s.load_15) == (0.5, 0.4, 0.3)
    assert s.mem_total_bytes == 16000000 * 1024
    assert s.mem_available_bytes == 12000000 * 1024
    assert s.mem_used_bytes == 4000000 * 1024
    assert s.swap_total_bytes == 4000000 * 1024 and s.swap_used_bytes == 1000000 * 1024
    assert (s.swap_in_bytes, s.swap_out_bytes) == (100 * page, 250 * page)
    eth0 = {n.name: n for n in s.net}["eth0"]
    assert (eth0.rx_bytes, eth0.tx_bytes, eth0.rx_errors, eth0.tx_drops) == (1000000, 500000, 1, 4)
    # whole devices only: loop, ram and the partition sda1 are left out
    disks = {d.name: d for d in s.disks}
    assert sorted(disks) == ["nvme0n1", "sda"]
    assert disks["sda"].read_bytes == 20000 * 512 and disks["sda"].write_bytes == 40000 * 512
    assert disks["sda"].reads == 1000 and disks["sda"].busy_ms == 1200
    assert s.pressure["cpu"].some_total_us == 123456 and s.pressure["cpu"].some_avg10_pct == 1.5
    assert s.pressure["io"].full_total_us == 333
    assert s.temps_c == {"coretemp/Package id 0": 45.5, "coretemp/temp2": 43.0, "x86_pkg_temp/thermal_zone0": 47.0}
    assert s.procs_total == 2


def test_missing_files_leave_defaults(tmp_path):
    s = HostReader(str(tmp_path), str(tmp_path)).read()
    assert s.cpu_per_core == [] and s.mem_total_bytes == 0 and s.net == [] and s.pressure == {}


def test_parse_pressure_without_full_line():
    p = parse_pressure("some avg10=3.00 avg60=1.00 avg300=0.00 total=42\n")
    assert p.some_total_us == 42 and p.full_total_us == 0 and p.some_avg10_pct == 3.0


def test_real_host_sample_is_sane():
    s = HostReader().read()
    assert len(s.cpu_per_core) == os.cpu_count()
    assert s.mem_total_bytes > s.mem_used_bytes > 0
    assert any(n.name == "lo" for n in s.net)
    assert all(not d.name.startswith(("loop", "ram")) for d in s.disks)
    assert s.procs_total > 1
    if os.path.exists("/proc/pressure/cpu"):
        assert set(s.pressure) >= {"cpu"}


def test_host_identity_fixture_and_real(data_dir):
    ident = host_identity(str(data_dir / "proc"))
    assert ident == {
        "hostname": "fixture-host", "cpu_model": "Fixture CPU @ 3.00GHz", "cpu_count": 2,
        "mem_total_bytes": 16000000 * 1024, "swap_total_bytes": 4000000 * 1024,
        "kernel": "6.1.0-fixture", "boot_time_s": 1700000000.0,
    }
    real = host_identity()
    assert real["cpu_count"] == os.cpu_count() and real["kernel"] == os.uname().release
    assert real["hostname"] == os.uname().nodename and real["boot_time_s"] > 1e9
