"""32 real agentd (simulated GPUs, as the demo uses) behind one real relay."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from agentd.protocol.jobs import JobSpec
from agentd.protocol.messages import JobReply, Show, Submit
from agentd.store.audit import AUDIT_NAME
from tests.agentd_proc import REPO, AgentdProc, start_agentd
from tests.control.control_helpers import wait_for
from tests.relay.relay_helpers import relay, wait_nodes

N_NODES = 32
TARGET = 17


def _utime(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11])


def test_32_real_agentd_behind_a_relay(tmp_path: Path) -> None:
    started = time.monotonic()
    nodes: list[AgentdProc] = []
    try:
        for i in range(N_NODES):  # started together, waited for after: 2 cores start them in turn anyway
            nodes.append(start_agentd(tmp_path, node=f"real-{i:02d}", simulate_gpus=1, interval=1.0, wait=False))
        for n in nodes:
            n.wait_ready(timeout_s=120)
        cluster = tmp_path / "cluster.toml"
        cluster.write_text("".join(f'[[node]]\nname = "{n.node}"\nendpoint = "{n.ctl}"\n\n' for n in nodes))
        with relay(tmp_path, cluster) as r:
            wait_nodes(r, N_NODES + 1, timeout_s=120)
            out = subprocess.run([sys.executable, "-m", "agentd.cli", "--node", r.ctl, "nodes", "--json", "--timeout", "30"],
                                 capture_output=True, text=True, check=False, timeout=60, cwd=REPO)
            assert out.returncode == 0, out.stderr
            assert {row["name"] for row in json.loads(out.stdout)} >= {n.node for n in nodes}

            target = nodes[TARGET]
            spec = JobSpec(argv=[sys.executable, "-c", "while True: pass"], name="spin")
            with target.client(timeout_s=20) as c:
                sub = c.call(Submit(spec=spec))
            assert isinstance(sub, JobReply)
            job_id = sub.job.id
            with target.client(timeout_s=10) as c:
                job = wait_for(lambda: (j := c.call(Show(job=job_id)).job).state == "running" and j.pid and j,  # type: ignore[attr-defined]
                               30, "the job to run")
            pid = job.pid  # type: ignore[attr-defined]

            # The pause names no node: the relay finds the owner by the job id.
            out = subprocess.run([sys.executable, "-m", "agentd.cli", "--node", r.ctl, "pause", job_id, "--json",
                                  "--timeout", "30"], capture_output=True, text=True, check=False, timeout=60, cwd=REPO)
            assert out.returncode == 0, out.stderr
            acked = json.loads(out.stdout.splitlines()[-1])
            assert acked["id"] == job_id and acked["state"] == "paused" and acked["node"] == target.node
            with target.client(timeout_s=10) as c:
                own = c.call(Show(job=job_id))
            assert isinstance(own, JobReply) and own.job.state == "paused"
            before = _utime(pid)
            time.sleep(1.0)
            assert _utime(pid) == before, "a paused job's process used CPU: it is not frozen"
            # The node's audit log names the client behind the relay, not only the relay.
            audit = (target.state_dir / AUDIT_NAME).read_text()
            assert f'via relay {r.node}' in audit and job_id in audit
        print(f"\n32 real agentd behind a relay: {time.monotonic() - started:.1f} s")
    finally:
        for n in nodes:  # jobs first (they outlive agentd by design), then every daemon at once
            if n.proc is not None and n.proc.poll() is None and n is nodes[TARGET]:
                n.cancel_all_jobs()
        for n in nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.proc.terminate()
        for n in nodes:
            n.stop(cancel_jobs=False)
