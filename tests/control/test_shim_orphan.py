"""A job's shim outlives agentd by design (a restarted agentd re-adopts the job), but not the
job's own dir: when the state dir is gone, nobody can read exit.json, and the shim must not
retry writing it forever (it did, as a full-disk measure, and outlived every test)."""

from __future__ import annotations

import shutil
import time

from agentd.protocol import JobSpec
from agentd.protocol.messages import Submit
from tests.agentd_proc import reap_orphans, start_agentd


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_shim_whose_job_dir_is_gone_exits_when_its_job_ends(tmp_path):
    node = start_agentd(tmp_path, node="n1", simulate_gpus=0)
    try:
        with node.client(timeout_s=10) as c:
            job = c.call(Submit(spec=JobSpec(argv=["sleep", "2"]))).job
        shim = _parent(job.pid)
    finally:
        node.stop(cancel_jobs=False)
    shutil.rmtree(node.state_dir)
    deadline = time.monotonic() + 20
    while _alive(shim):
        assert time.monotonic() < deadline, f"shim {shim} still runs 20 s after its job ended and its dir was removed"
        time.sleep(0.1)
    reap_orphans()
