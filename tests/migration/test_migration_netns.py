"""Two agentd in separate network namespaces joined by a veth pair, CURVE on: a job moves."""

import os
import shutil
import subprocess
import sys

import psutil
import pytest

from agentd.protocol.jobs import CheckpointContract, JobSpec
from agentd.protocol.messages import Jobs, Migrate, Show, Submit
from agentd.protocol.migration import MigrateStatus
from tests.netns_hosts import NS, sh, two_hosts

from .conftest import TRAINER, steps, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2")]


def test_migration_across_network_namespaces_with_curve(netns, tmp_path):
    _keys, a, b = two_hosts(tmp_path)
    b.authorize_daemon(a)
    progress = tmp_path / "p.txt"
    try:
        a.start()
        b.start()
        # Not authorised as a daemon: an operator key may not push migrations into b.
        refused = b.call(MigrateStatus(migration_id="x"))
        assert not refused["ok"] and refused["code"] == 401
        spec = JobSpec(argv=[sys.executable, str(TRAINER), str(progress)], name="trainer",
                       env={"PROGRESS_FILE": str(progress), "STEP_S": "0.02"},
                       checkpoint=CheckpointContract(signal="SIGUSR1", timeout_s=10))
        job = a.call(Submit(spec=spec))["reply"]["job"]
        wait_for(lambda: len(steps(progress)) >= 20, timeout_s=20, what="step 20 on a")
        server_key_b = (b.keys / "server.key")
        reply = a.call(Migrate(job=job["id"], target=b.ctl, target_key=str(server_key_b)))
        assert reply["ok"], reply
        info = wait_for(lambda: (lambda j: j if j["state"] in ("migrated",) or j.get("migration", {}).get("phase") in ("rolled_back", "failed") else None)(
            a.call(Show(job=job["id"]))["reply"]["job"]), timeout_s=60, what="migration to finish", poll_s=0.3)
        assert info["state"] == "migrated", info.get("migration")
        new = b.call(Show(job=info["migrated_to"]))["reply"]["job"]
        assert new["state"] == "running" and new["resumed_from"] == job["id"]
        wait_for(lambda: any(p == new["pid"] for s, p in steps(progress)), timeout_s=15, what="trainer on b")
        before = [s for s, p in steps(progress) if p != new["pid"]]
        assert [s for s, p in steps(progress) if p == new["pid"]][0] == before[-1] + 1
    finally:
        for d in (a, b):
            d.stop()
        for p in psutil.process_iter(["pid", "cmdline"]):
            if str(progress) in (p.info["cmdline"] or []):
                p.kill()


def _trainers(progress):
    return [p for p in psutil.process_iter(["pid", "cmdline"]) if str(progress) in (p.info["cmdline"] or [])]


def _cluster(tmp_path):
    _keys, a, b = two_hosts(tmp_path)
    b.authorize_daemon(a)
    return a, b


BLOCK_PORT = """table inet fleetdeck_test {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 7710 drop
  }
}
"""


@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (Debian package nftables; make test installs it as root)")
def test_target_port_blocked_mid_transfer_job_runs_again_here(netns, tmp_path):
    """A firewall drops the target's control port while the checkpoint is on the wire: the
    source gives up after its retry window, restarts the job from its checkpoint, and at no
    poll do two trainers run."""
    a, b = _cluster(tmp_path)
    progress = tmp_path / "p.txt"
    try:
        a.start(migration_retry_s=3, migration_call_timeout_s=2)
        b.start()
        # 10 MB/s out of a, so the 48 MiB checkpoint is on the wire for about five seconds: time
        # for the slow polls (each one an `ip netns exec python`) to see it and block the port.
        sh("ip", "netns", "exec", NS["a"][0], "tc", "qdisc", "add", "dev", "fd-veth-a", "root",
           "tbf", "rate", "80mbit", "burst", "256kb", "latency", "500ms")
        spec = JobSpec(argv=[sys.executable, str(TRAINER), str(progress)], name="trainer",
                       env={"PROGRESS_FILE": str(progress), "STEP_S": "0.02", "PAD_BYTES": str(48 << 20)},
                       checkpoint=CheckpointContract(signal="SIGUSR1", timeout_s=20))
        job = a.call(Submit(spec=spec))["reply"]["job"]
        wait_for(lambda: len(steps(progress)) >= 20, timeout_s=20, what="step 20 on a")
        assert a.call(Migrate(job=job["id"], target=b.ctl, target_key=str(b.keys / "server.key")))["ok"]
        counts = []

        def sending():
            counts.append(len(_trainers(progress)))
            mig = a.call(Show(job=job["id"]))["reply"]["job"].get("migration") or {}
            return mig.get("phase") == "transferring" and mig.get("bytes_sent", 0) > 0

        wait_for(sending, timeout_s=30, what="the transfer to start", poll_s=0.05)
        subprocess.run(["ip", "netns", "exec", NS["b"][0], "nft", "-f", "-"], input=BLOCK_PORT.encode(),
                       check=True, capture_output=True, timeout=10)

        def ended():
            counts.append(len(_trainers(progress)))
            j = a.call(Show(job=job["id"]))["reply"]["job"]
            return j if (j.get("migration") or {}).get("phase") in ("rolled_back", "failed", "done") else None

        info = wait_for(ended, timeout_s=60, what="the migration to give up", poll_s=0.2)
        mig = info["migration"]
        assert mig["phase"] == "rolled_back" and "unreachable" in mig["reason"], mig
        assert mig["bytes_sent"] < mig["bytes_total"], "the block must have landed mid-transfer"
        assert max(counts) == 1, f"two trainers ran at once: {counts}"
        before = max(s for s, _ in steps(progress))
        wait_for(lambda: max(s for s, _ in steps(progress)) > before + 5, timeout_s=20, what="the job to run again on a")
        first_pid = steps(progress)[0][1]
        old = [s for s, pid in steps(progress) if pid == first_pid]
        new = [s for s, pid in steps(progress) if pid != first_pid]
        assert len(_trainers(progress)) == 1 and len({pid for _, pid in steps(progress)}) == 2
        assert new[0] == old[-1] + 1, "the restart here must resume from the checkpoint"
        subprocess.run(["ip", "netns", "exec", NS["b"][0], "nft", "flush", "ruleset"], check=True, capture_output=True, timeout=10)
        assert b.call(Jobs())["reply"]["jobs"] == [], "the target must not run the job"
    finally:
        for d in (a, b):
            d.stop()
        for p in _trainers(progress):
            p.kill()
