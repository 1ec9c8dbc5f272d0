"""Cgroup layout: beneath our own cgroup, entered before exec, limits applied, v1/v2/none detected."""

from __future__ import annotations

from pathlib import Path

from agentd.control.cgroups import detect_layout, remove_layout
from agentd.kernel.procfs import parse_cgroup_membership
from tests.control.control_helpers import PY, node_name, spec, wait_for


def test_detects_v1_v2_and_none(tmp_path):
    own = parse_cgroup_membership(Path("/proc/self/cgroup").read_text())
    name = node_name()
    v1 = detect_layout(Path("/sys/fs/cgroup"), name)
    v2 = detect_layout(Path("/sys/fs/cgroup/unified"), name)
    try:
        assert v1 is not None and v1.version == 1 and v1.control == "cgroup-v1"
        assert {"cpu", "memory", "freezer", "pids"} <= v1.bases.keys()
        assert v1.bases["memory"] == Path("/sys/fs/cgroup/memory") / own["memory"].lstrip("/") / f"agentd-{name}"
        assert v2 is not None and v2.version == 2 and v2.bases == {
            "unified": Path("/sys/fs/cgroup/unified") / own[""].lstrip("/") / f"agentd-{name}"}
    finally:
        for layout in (v1, v2):
            if layout is not None:
                remove_layout(layout)
    assert detect_layout(tmp_path, name) is None


def test_job_is_in_its_cgroup_from_its_first_instruction(manager):
    m, _ = manager
    job = m.submit(spec([PY, "-c", "print(open('/proc/self/cgroup').read(), flush=True)\nimport time\ntime.sleep(30)"]))
    text = wait_for(lambda: m.read_log(job.id)[0].decode(), 10, "the job's output")
    mine = parse_cgroup_membership(text)
    for ctrl in ("cpu", "memory", "freezer", "pids", "blkio"):
        assert mine[ctrl].endswith(f"/agentd-{m.node}/job-1"), (ctrl, mine[ctrl])
    assert job.pid in m.probes()[job.id][1]


def test_memory_limit_is_enforced(manager):
    m, _ = manager
    job = m.submit(spec([PY, "-c", "b = bytearray(400 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1"],
                        memory_bytes=64 << 20))
    memdir = Path(m.probes()[job.id][0].paths["memory"])
    assert int((memdir / "memory.limit_in_bytes").read_text()) == 64 << 20
    wait_for(lambda: (m.tick(), m.get(job.id).state == "failed")[1], 30, "the job to hit its memory limit")
    assert m.get(job.id).reason == "killed by SIGKILL (out of memory)"


def test_gpu_assignments_and_probes(manager):
    m, _ = manager
    a = m.submit(spec(gpus=2))
    assert m.gpu_assignments() == {0: [a.pid], 1: [a.pid]}
    m.pause(a.id)
    assert m.gpu_assignments() == {0: [a.pid], 1: [a.pid]}, "a paused job still holds its GPUs"
    ref, pids = m.probes()[a.id]
    assert ref.version == 1 and pids == [a.pid]
