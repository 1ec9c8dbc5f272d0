"""agentd.kernel.cgroupfs on fixture trees (v1, v2, frozen, thawed, broken files)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agentd.kernel import cgroupfs
from agentd.kernel.files import parse_keyed, read_int, read_keyed
from agentd.kernel.psi import PressureValues, parse_pressure

from .conftest import write_tree


def test_v2_fixture_frozen_cgroup(data_dir):
    job = data_dir / "cgroup_v2" / "fleet" / "job-1"
    assert cgroupfs.v2_frozen(job) is True
    assert cgroupfs.is_frozen({"unified": str(job)}) is True
    assert cgroupfs.procs(job) == [101, 102] and cgroupfs.count_procs(job) == 2
    assert cgroupfs.read_pressure(job)["cpu"].some_total_us == 40000
    assert cgroupfs.parse_io_stat((job / "io.stat").read_text()) == (1500, 2000)
    assert cgroupfs.is_v2(data_dir / "cgroup_v2") and not cgroupfs.is_v2(data_dir / "cgroup_v1")


def test_v1_fixture_frozen_cgroup(data_dir):
    freezer = data_dir / "cgroup_v1" / "freezer" / "fleet" / "job-1"
    assert cgroupfs.v1_freezer_state(freezer) == cgroupfs.V1_FROZEN
    assert cgroupfs.is_frozen({"freezer": freezer}) is True


def test_thawed_freezing_and_v1_freezer_deciding(tmp_path):
    write_tree(tmp_path, {
        "v2/cgroup.events": "populated 1\nfrozen 0\n", "v2/cgroup.freeze": "0\n",
        "v1/freezer.state": "THAWED\n", "busy/freezer.state": "FREEZING\n",
    })
    assert cgroupfs.v2_frozen(tmp_path / "v2") is False and cgroupfs.has_v2_freeze(tmp_path / "v2")
    assert cgroupfs.is_frozen({"unified": tmp_path / "v2"}) is False
    assert cgroupfs.is_frozen({"freezer": tmp_path / "v1"}) is False
    # FREEZING is not frozen yet: tasks busy in the kernel still run
    assert cgroupfs.is_frozen({"freezer": tmp_path / "busy"}) is False
    # Hybrid: a readable v1 freezer decides; a gone one falls back to the v2 tree
    assert cgroupfs.is_frozen({"freezer": tmp_path / "v1", "unified": tmp_path / "v2"}) is False
    assert cgroupfs.is_frozen({"freezer": tmp_path / "gone", "unified": tmp_path / "v2"}) is False


def test_missing_and_malformed_files_give_none(tmp_path):
    write_tree(tmp_path, {
        "old-kernel/cgroup.events": "populated 1\n",  # no v2 freezer before Linux 5.2
        "bad/cgroup.procs": "12\nnot-a-pid\n", "bad/cgroup.events": "frozen yes\n",
        "bad/memory.max": "max\n", "bad/memory.current": "lots\n", "bad/cpu.stat": "usage_usec 5\njunk\nx y z\n",
    })
    gone = tmp_path / "gone"
    assert cgroupfs.v2_frozen(gone) is None and cgroupfs.v1_freezer_state(gone) is None
    assert cgroupfs.is_frozen({"unified": gone, "freezer": gone}) is None and cgroupfs.is_frozen({}) is None
    assert cgroupfs.v2_frozen(tmp_path / "old-kernel") is None
    assert cgroupfs.v2_frozen(tmp_path / "bad") is None
    assert cgroupfs.procs(gone) is None and cgroupfs.count_procs(gone) is None
    assert cgroupfs.procs(tmp_path / "bad") is None  # a half-parsed pid list is never returned
    assert cgroupfs.tree_pids(gone) == set()
    assert cgroupfs.controllers(gone) is None and not cgroupfs.has_v2_freeze(gone)
    assert cgroupfs.read_pressure(gone) == {}
    assert read_int(tmp_path / "bad" / "memory.max") is None and read_int(tmp_path / "bad" / "memory.current") is None
    assert read_keyed(tmp_path / "bad" / "cpu.stat") == {"usage_usec": 5} and read_keyed(gone / "cpu.stat") == {}


def test_tree_pids_includes_child_cgroups(tmp_path):
    write_tree(tmp_path, {"job/cgroup.procs": "10\n11\n", "job/tool-1/cgroup.procs": "12\n",
                          "job/tool-1/deeper/cgroup.procs": "", "job/tool-2/cgroup.procs": "13\n"})
    assert cgroupfs.tree_pids(tmp_path / "job") == {10, 11, 12, 13}
    assert cgroupfs.procs(tmp_path / "job") == [10, 11]


def test_controllers_and_v1_mounts(tmp_path):
    write_tree(tmp_path, {
        "unified/cgroup.controllers": "cpu io memory pids\n",
        "cpu,cpuacct/tasks": "", "memory/tasks": "", "freezer/not-a-hierarchy": "",
    })
    assert cgroupfs.controllers(tmp_path / "unified") == {"cpu", "io", "memory", "pids"}
    assert cgroupfs.v1_mount(tmp_path, "cpuacct") == str(tmp_path / "cpu,cpuacct")
    assert cgroupfs.v1_mount(tmp_path, "memory") == str(tmp_path / "memory")
    assert cgroupfs.v1_mount(tmp_path, "freezer") is None
    assert cgroupfs.v1_mount(tmp_path / "missing", "memory") is None


def test_stat_file_parsers():
    assert cgroupfs.parse_io_stat("8:0 rbytes=10 wbytes=20 rios=1\n8:16 rbytes=x wbytes=5\n\n") == (10, 25)
    text = "8:0 Read 100\n8:0 Write 50\n8:0 Sync 7\n8:16 Read 1\nTotal 151\n8:0 Read lots\n"
    assert cgroupfs.parse_blkio_bytes(text) == (101, 50)
    assert parse_keyed("usage_usec 7\nnr_periods 2\n") == {"usage_usec": 7, "nr_periods": 2}


def test_pressure():
    p = parse_pressure("some avg10=3.00 avg60=1.00 avg300=0.00 total=42\n")  # CPU on old kernels: no full line
    assert p == PressureValues(some_total_us=42, some_avg10_pct=3.0)
    assert parse_pressure("some avg10=x total=\nfull avg10=1.5 total=9\n") == PressureValues(full_total_us=9, full_avg10_pct=1.5)


def test_detect_cgroup_mode(data_dir, tmp_path):
    assert cgroupfs.detect_cgroup_mode(data_dir / "cgroup_v2") == "v2"
    assert cgroupfs.detect_cgroup_mode(data_dir / "cgroup_v1") == "v1"
    hybrid = write_tree(tmp_path / "hybrid", {"memory/cgroup.procs": "", "unified/cgroup.controllers": ""})
    assert cgroupfs.detect_cgroup_mode(hybrid) == "hybrid"
    # No readable cgroup root: this process's own /proc/self/cgroup decides.
    none, proc = tmp_path / "none", tmp_path / "proc"
    for text, mode in (("0::/user.slice\n", "v2"), ("4:memory:/x\n0::/x\n", "hybrid"), ("4:memory:/x\n", "v1")):
        write_tree(proc, {"self/cgroup": text})
        assert cgroupfs.detect_cgroup_mode(none, proc) == mode
    assert cgroupfs.detect_cgroup_mode(none, tmp_path / "missing") == "none"
    assert cgroupfs.detect_cgroup_mode() in ("v1", "v2", "hybrid")  # this host


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_text_parsers_never_raise(text):
    parse_pressure(text)
    parse_keyed(text)
    cgroupfs.parse_io_stat(text)
    cgroupfs.parse_blkio_bytes(text)


def test_readers_accept_str_and_path(data_dir):
    job = data_dir / "cgroup_v2" / "fleet" / "job-1"
    assert cgroupfs.procs(str(job)) == cgroupfs.procs(Path(job))
