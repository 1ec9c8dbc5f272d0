"""The read layer against real cgroups that the control layer (the write side) made and froze."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentd.control.cgroups import CgroupLayout, JobCgroup, detect_layout, remove_layout
from agentd.kernel import cgroupfs, procfs

pytestmark = pytest.mark.root

ROOTS = {"v1": Path("/sys/fs/cgroup"), "v2": Path("/sys/fs/cgroup/unified")}


@pytest.fixture(params=["v1", "v2"])
def job_cgroup(request: pytest.FixtureRequest) -> Iterator[tuple[JobCgroup, int]]:
    if os.geteuid() != 0:
        pytest.skip("real cgroups need root")
    layout: CgroupLayout | None = detect_layout(ROOTS[request.param], f"kernel-{uuid.uuid4().hex[:8]}")
    if layout is None or layout.version != int(request.param[1]):
        if layout is not None:
            remove_layout(layout)
        pytest.skip(f"no writable cgroup {request.param} hierarchy at {ROOTS[request.param]} on this host")
    cg = layout.create("job-1")
    procs_files = cg.procs_files()

    def enter() -> None:  # in the child before exec: the whole job lives in the cgroup
        for f in procs_files:
            with open(f, "w") as fh:
                fh.write(str(os.getpid()))

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], preexec_fn=enter)
    try:
        yield cg, child.pid
    finally:
        if cg.has_freezer():
            cg.set_frozen(False)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        cg.kill_all()
        cg.remove()
        remove_layout(layout)


def test_membership_and_freeze_read_back(job_cgroup):
    cg, pid = job_cgroup
    paths = {k: str(v) for k, v in cg.paths.items()}
    base = cg.paths["freezer"] if cg.version == 1 else cg.paths["unified"]
    assert cgroupfs.procs(base) == [pid] and cgroupfs.tree_pids(base) == {pid}
    membership = procfs.read_cgroup_membership(pid)
    assert membership is not None
    key = "freezer" if cg.version == 1 else ""
    assert membership[key].endswith("/job-1")
    assert cgroupfs.is_frozen(paths) is False
    cg.set_frozen(True)  # waits until the kernel reports it
    assert cgroupfs.is_frozen(paths) is True and cg.is_frozen()
    st = procfs.read_stat(pid)
    assert st is not None and st.state in ("S", "D", "T")  # frozen tasks sleep in the freezer
    cg.set_frozen(False)
    assert cgroupfs.is_frozen(paths) is False and not cg.is_frozen()
