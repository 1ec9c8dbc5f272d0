"""Parsing Slurm's output and finding Slurm's cgroups: no Slurm needed (fixture text and trees)."""

from __future__ import annotations

import json
from pathlib import Path

from agentd.control.slurm import SlurmError, _protocol_error, slurm_cgroup
from agentd.control.slurm_parse import (
    expand_hostlist,
    parse_listpids,
    parse_squeue_format,
    parse_squeue_json,
    squeue_format,
)
from agentd.protocol.errors import ErrorCode


def test_expand_hostlist():
    assert expand_hostlist("gpu[01-03,07],cpu-a") == ["gpu01", "gpu02", "gpu03", "gpu07", "cpu-a"]
    assert expand_hostlist("n[1-2]-ib[0-1]") == ["n1-ib0", "n1-ib1", "n2-ib0", "n2-ib1"]
    assert expand_hostlist("") == [] and expand_hostlist("(null)") == []


def test_squeue_json_2305_shapes():
    """Slurm 23.02+ nests numbers and lists the state; 22.05 prints negative nice unsigned."""
    new = {"jobs": [{
        "job_id": 7, "name": "train", "job_state": ["SUSPENDED"], "nodes": "gpu[1-2]",
        "nice": {"set": True, "infinite": False, "number": -2000}, "priority": {"set": True, "number": 99},
        "submit_time": {"set": True, "number": 1700000000}, "start_time": {"set": True, "number": 1700000005},
        "exit_code": {"status": ["SUCCESS"], "return_code": {"set": True, "number": 0}},
        "restart_cnt": 2, "required_nodes": "", "partition": "gpu",
    }]}
    [j] = parse_squeue_json(json.dumps(new))
    assert (j.job_id, j.state, j.nodes, j.nice, j.priority, j.restarts) == (7, "SUSPENDED", ["gpu1", "gpu2"], -2000, 99, 2)
    assert j.start_s == 1700000005.0
    old = {"jobs": [{"job_id": 8, "job_state": "PENDING", "nice": 4294966796, "priority": 5, "nodes": ""}]}
    [k] = parse_squeue_json(json.dumps(old))
    assert (k.state, k.nice, k.nodes) == ("PENDING", -500, [])


def test_squeue_format_fallback():
    fields = ["12", "RUNNING", "None", "vm", "vm", "debug", "root", "0", "4294901759",
              "2026-11-23T16:01:36", "2026-11-23T16:01:37", "Unknown", "/tmp", "(null)", "a|b name"]
    assert squeue_format().count("%") == len(fields)
    [j] = parse_squeue_format("\x1f".join(fields) + "\n")
    assert (j.job_id, j.state, j.nodes, j.name, j.end_s) == (12, "RUNNING", ["vm"], "a|b name", None)
    assert j.start_s is not None and j.start_s > j.submit_s


def test_listpids():
    text = "PID      JOBID    STEPID   LOCALID GLOBALID\n6647     1        batch    0       0\n6648     1        batch    -       -\n"
    assert parse_listpids(text) == [6647, 6648]


def _proc_tree(tmp_path: Path, cgroup_lines: str) -> Path:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(
        "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "33 31 0:30 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer\n"
        "34 31 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "35 31 0:32 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n"
        "36 31 0:33 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
    )
    (proc / "4242").mkdir()
    (proc / "4242" / "cgroup").write_text(cgroup_lines)
    return proc


def test_slurm_cgroup_v1(tmp_path):
    proc = _proc_tree(tmp_path, "5:freezer:/slurm/uid_0/job_5/step_batch\n4:memory:/slurm/uid_0/job_5/step_batch/task_0\n"
                                "3:cpu,cpuacct:/slurm/uid_0/job_5/step_batch\n1:name=systemd:/system.slice/slurmd.service\n0::/\n")
    ref = slurm_cgroup(4242, 5, proc_root=str(proc))
    assert ref is not None and ref.version == 1
    assert ref.paths == {
        "freezer": "/sys/fs/cgroup/freezer/slurm/uid_0/job_5",
        "memory": "/sys/fs/cgroup/memory/slurm/uid_0/job_5",
        "cpu": "/sys/fs/cgroup/cpu,cpuacct/slurm/uid_0/job_5",
        "cpuacct": "/sys/fs/cgroup/cpu,cpuacct/slurm/uid_0/job_5",
    }
    assert slurm_cgroup(4242, 6, proc_root=str(proc)) is None  # another job's id: not this cgroup


def test_slurm_cgroup_v2_and_none(tmp_path):
    proc = _proc_tree(tmp_path, "0::/system.slice/slurmstepd.scope/job_9/step_batch/user/task_0\n")
    ref = slurm_cgroup(4242, 9, proc_root=str(proc))
    assert ref is not None and ref.version == 2
    assert ref.paths == {"unified": "/sys/fs/cgroup/unified/system.slice/slurmstepd.scope/job_9"}
    linuxproc = _proc_tree(tmp_path / "b", "4:memory:/\n0::/system.slice/slurmd.service\n")
    assert slurm_cgroup(4242, 9, proc_root=str(linuxproc)) is None
    assert slurm_cgroup(1, 9, proc_root=str(linuxproc)) is None  # no such pid


def test_slurm_errors_become_protocol_errors():
    def err(msg: str):
        return _protocol_error(SlurmError(["scontrol", "update"], 1, msg), "n1.slurm-3")

    assert err("Invalid job id specified").code == ErrorCode.NOT_FOUND
    assert err("Access/permission denied").code == ErrorCode.UNAUTHORIZED
    assert err("Job is pending execution").code == ErrorCode.CONFLICT
    e = err("Requested operation is presently disabled")
    assert e.code == ErrorCode.CONFLICT and "Requested operation is presently disabled" in e.message
    assert "n1.slurm-3" in e.message


def test_a_job_slurm_runs_on_several_nodes_is_one_group_with_a_rank_per_node():
    """Each node's agentd lists its part of a multi-node Slurm job as a rank of group
    ``slurm-ID`` (no leader: Slurm starts and stops it); folded, it is one row."""
    from agentd.control.slurm import SlurmBackend, SlurmCommands
    from agentd.control.slurm_parse import SlurmJob
    from agentd.groups.gangview import group_rows

    no_slurm = SlurmCommands(env={"PATH": "/nonexistent"})  # listpids fails: no pids, as on a node without them
    job = SlurmJob(job_id=42, name="train", state="RUNNING", nodes=["gpu-a", "gpu-b", "gpu-c"], user="alice")
    parts = [SlurmBackend(n, slurm_node=n, commands=no_slurm)._info(job) for n in ("gpu-b", "gpu-a", "gpu-c")]
    assert [(p.spec.group.id, p.spec.group.rank, p.spec.group.world_size, p.spec.group.leader) for p in parts] == [
        ("slurm-42", 1, 3, ""), ("slurm-42", 0, 3, ""), ("slurm-42", 2, 3, "")]
    rows, single = group_rows(parts)
    assert not single and len(rows) == 1 and rows[0].id == "slurm-42" and rows[0].ranks == 3
    one_node = SlurmBackend("gpu-a", slurm_node="gpu-a", commands=no_slurm)._info(
        SlurmJob(job_id=43, state="RUNNING", nodes=["gpu-a"]))
    assert one_node.spec.group is None
