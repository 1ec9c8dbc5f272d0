"""agentd.kernel.procfs on fixture trees and on this very process."""

from __future__ import annotations

import os
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentd.kernel import procfs

from .conftest import write_tree

STAT_4242 = "4242 (my (odd) proc) R 1 4242 4242 0 -1 4194560 100 0 0 0 1000 250 0 0 20 0 1 0 5000 2000000 1000 1\n"


def test_stat_of_a_fixture_process_with_parentheses_in_its_name(data_dir):
    st_ = procfs.read_stat(4242, str(data_dir / "proc"))
    assert st_ is not None
    assert (st_.comm, st_.state, st_.ppid, st_.pgrp, st_.session) == ("my (odd) proc", "R", 1, 4242, 4242)
    assert (st_.utime_ticks, st_.stime_ticks, st_.nice, st_.start_ticks, st_.rss_pages) == (1000, 250, 0, 5000, 1000)


def test_stat_missing_or_malformed_is_none(tmp_path):
    write_tree(tmp_path, {"7/stat": "7 (cut short) S 1 7", "8/stat": "8 (bad) S x y z " + "0 " * 30, "9/stat": "no parens"})
    for pid in (6, 7, 8, 9):  # 6 does not exist
        assert procfs.read_stat(pid, str(tmp_path)) is None
    assert procfs.read_stat(1, str(tmp_path / "no-such-proc")) is None


def test_stat_of_this_process_matches_the_kernel():
    st_ = procfs.read_stat(os.getpid())
    assert st_ is not None and st_.state in ("R", "S")
    assert (st_.ppid, st_.pgrp, st_.session) == (os.getppid(), os.getpgrp(), os.getsid(0))
    assert st_.rss_pages > 0 and st_.start_ticks > 0
    assert procfs.read_stat("self") is not None


def test_status_comm_and_fds_of_this_process():
    status = procfs.read_status(os.getpid())
    assert status is not None and status["Pid"] == str(os.getpid()) and int(status["Uid"].split()[0]) == os.getuid()
    assert procfs.read_comm(os.getpid())
    r, w = os.pipe()
    try:
        assert procfs.fd_target("self", r) is not None and procfs.fd_target("self", r).startswith("pipe:")
        assert r in (procfs.list_fds("self") or [])
    finally:
        os.close(r)
        os.close(w)
    assert procfs.fd_target("self", 1 << 20) is None
    assert (procfs.read_resident_pages() or 0) > 0


def test_gone_process_gives_none(tmp_path):
    assert procfs.read_status(4242, str(tmp_path)) is None
    assert procfs.read_comm(4242, str(tmp_path)) is None
    assert procfs.read_cgroup_membership(4242, str(tmp_path)) is None
    assert procfs.read_mountinfo(4242, str(tmp_path)) is None
    assert procfs.read_resident_pages(4242, str(tmp_path)) is None
    assert procfs.list_fds(4242, str(tmp_path)) is None


def test_statm_parse():
    assert procfs.statm_resident_pages(b"1000 250 10 1 0 100 0\n") == 250
    assert procfs.statm_resident_pages(b"1000\n") is None and procfs.statm_resident_pages(b"a b") is None


def test_list_pids(data_dir, tmp_path):
    assert sorted(procfs.list_pids(str(data_dir / "proc")) or []) == [1, 4242]
    assert procfs.list_pids(str(tmp_path / "missing")) is None
    assert os.getpid() in (procfs.list_pids() or [])


def test_cgroup_membership_v1_v2_and_named_hierarchies(data_dir, tmp_path):
    own = procfs.parse_cgroup_membership("12:cpu,cpuacct:/a/b\n4:memory:/m\n1:name=systemd:/s\n0::/u\nbroken line\n")
    assert own == {"cpu": "/a/b", "cpuacct": "/a/b", "memory": "/m", "name=systemd": "/s", "": "/u"}
    assert procfs.read_cgroup_membership("self", str(data_dir / "proc")) == {"pids": "/", "memory": "/svc", "": "/svc"}
    # A path with a colon keeps it (only the first two colons separate fields).
    assert procfs.parse_cgroup_membership("0::/a:b\n") == {"": "/a:b"}
    real = procfs.read_cgroup_membership(os.getpid())
    assert real is not None and real  # this process is in some cgroup


MOUNTINFO = (
    "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
    "33 31 0:30 / /sys/fs/cgroup/freezer rw,nosuid shared:5 - cgroup cgroup rw,freezer\n"
    "35 31 0:32 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n"
    "36 31 0:33 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
    "37 31 0:34 / /mnt/with\\040space rw - ext4 /dev/sda1 rw\n"
    "garbage\n"
    "38 31 0:35 / - cgroup2\n"
)


def test_mountinfo_and_cgroup_mounts(tmp_path):
    mounts = procfs.parse_mountinfo(MOUNTINFO)
    assert [m.mount_point for m in mounts][-1] == "/mnt/with space"  # octal escapes undone
    assert mounts[2].fstype == "cgroup" and mounts[2].super_options == ("rw", "freezer")
    assert procfs.cgroup_mounts(mounts) == {
        "cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
        "freezer": "/sys/fs/cgroup/freezer", "unified": "/sys/fs/cgroup/unified",
    }  # rw, xattr and name=systemd are options, not controllers
    write_tree(tmp_path, {"self/mountinfo": MOUNTINFO})
    assert procfs.read_mountinfo("self", str(tmp_path)) == mounts
    real = procfs.read_mountinfo()
    assert real is not None and any(m.mount_point == "/" for m in real)


def test_host_files(data_dir, tmp_path):
    proc = str(data_dir / "proc")
    assert procfs.boot_time_s(proc) == 1700000000.0
    assert procfs.boot_time_s(str(tmp_path)) is None
    write_tree(tmp_path, {"stat": "btime nonsense\n"})
    assert procfs.boot_time_s(str(tmp_path)) is None
    mem = procfs.parse_meminfo("MemTotal:  1000 kB\nHugePages_Total:   4\nBad: x kB\n")
    assert mem == {"MemTotal": 1024000, "HugePages_Total": 4}
    assert procfs.read_meminfo(str(tmp_path)) is None
    pressure = procfs.read_host_pressure(proc)
    assert pressure["cpu"].some_total_us == 123456 and pressure["io"].full_avg10_pct == 1.25
    assert procfs.read_host_pressure(str(tmp_path)) == {}


TCP = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    "   0: 0100007F:1E1E 0200007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 555 1\n"
    "   1: 0100007F:1E1E 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 556 1\n"
    "   2: ZZZZ:1E1E 0200007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 557 1\n"
    "   3: short row\n"
)
TCP6 = (
    "  sl  local_address remote_address st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    "   0: 0000000000000000FFFF00000100007F:1E1E 0000000000000000FFFF00000300007F:9C41 01 "
    "00000000:00000000 00:00000000 00000000  1001        0 777 1\n"
)
UNIX = (
    "Num       RefCount Protocol Flags    Type St Inode Path\n"
    "0000000000000000: 00000002 00000000 00010000 0001 01 100 /run/agentd/ctl.sock\n"
    "0000000000000000: 00000003 00000000 00000000 0001 03 101 /run/agentd/ctl.sock\n"
    "0000000000000000: 00000003 00000000 00000000 0001 03 102\n"
    "0000000000000000: 00000003 00000000 00000000 zzzz 03 103 /x\n"
)


def test_net_tables_fixture(tmp_path):
    write_tree(tmp_path, {"net/tcp": TCP, "net/tcp6": TCP6, "net/unix": UNIX})
    conns = procfs.read_tcp_established(str(tmp_path))
    assert conns == [
        procfs.TcpConnection("127.0.0.1", 7710, "127.0.0.2", 40000, 1000, 555),
        procfs.TcpConnection("127.0.0.1", 7710, "127.0.0.3", 40001, 1001, 777),  # v4-mapped v6
    ]
    socks = procfs.read_unix_sockets(str(tmp_path))
    assert [(s.inode, s.connected_stream) for s in socks] == [(100, False), (101, True)]
    assert procfs.read_tcp_established(str(tmp_path / "none")) == []
    assert procfs.read_unix_sockets(str(tmp_path / "none")) == []


def test_real_loopback_connection_is_in_the_tcp_table():
    srv = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(srv.getsockname(), timeout=5)
    acc, _ = srv.accept()
    try:
        port, cport = srv.getsockname()[1], cli.getsockname()[1]
        mine = [c for c in procfs.read_tcp_established() if c.local_port == cport and c.remote_port == port]
        assert len(mine) == 1 and mine[0].uid == os.getuid() and mine[0].local_ip == "127.0.0.1"
        assert mine[0].inode == os.fstat(cli.fileno()).st_ino
    finally:
        for s in (acc, cli, srv):
            s.close()


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_text_parsers_never_raise(text):
    procfs.parse_cgroup_membership(text)
    procfs.parse_mountinfo(text)
    procfs.parse_meminfo(text)
    procfs.statm_resident_pages(text.encode())


@settings(max_examples=200, deadline=None)
@given(st.binary())
def test_stat_parser_never_raises(data):
    procfs.parse_stat(data)


@pytest.mark.parametrize("pid", [0, -1, "../etc"])
def test_odd_pids_are_just_gone(pid, tmp_path):
    assert procfs.read_stat(pid, str(tmp_path)) is None
