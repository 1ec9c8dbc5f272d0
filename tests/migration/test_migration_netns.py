"""Two agentd in separate network namespaces joined by a veth pair, CURVE on: a job moves."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import psutil
import pytest
import zmq.auth

from agentd.protocol.jobs import CheckpointContract, JobSpec
from agentd.protocol.messages import Hello, Migrate, Show, Submit
from agentd.protocol.migration import MigrateStatus
from tests.agentd_proc import REPO

from .conftest import TRAINER, steps, wait_for

NS = {"a": ("fd-a", "10.231.0.1"), "b": ("fd-b", "10.231.0.2")}
CALL = Path(__file__).with_name("netns_call.py")
pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2")]


def sh(*args):
    subprocess.run(args, check=True, capture_output=True, timeout=10)


@pytest.fixture
def netns():
    for ns, _ in NS.values():
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
    try:
        for ns, _ in NS.values():
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", "fd-veth-a", "netns", "fd-a", "type", "veth", "peer", "name", "fd-veth-b", "netns", "fd-b")
        for side, (ns, addr) in NS.items():
            dev = f"fd-veth-{side}"
            sh("ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        yield NS
    finally:
        for ns, _ in NS.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


class NsDaemon:
    def __init__(self, tmp, node, operator_keys: Path):
        self.node, (self.ns, self.addr) = node, NS[node]
        self.state = tmp / f"state-{node}"
        self.keys = self.state / "keys"
        self.keys.mkdir(parents=True)
        zmq.auth.create_certificates(str(self.keys), "server")
        zmq.auth.create_certificates(str(self.keys), "client")  # its identity towards peer daemons
        op = self.state / "authorized_keys" / "operator"
        op.mkdir(parents=True)
        shutil.copy(operator_keys / "client.key", op / "tester.key")
        self.ctl, self.pub = f"tcp://{self.addr}:7710", f"tcp://{self.addr}:7711"
        self.operator_keys = operator_keys
        self.proc = None
        self.log = tmp / f"{node}.stderr.log"

    def authorize_daemon(self, other: "NsDaemon"):
        d = self.state / "authorized_keys" / "daemon"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(other.keys / "client.key", d / f"{other.node}.key")

    def start(self):
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, "-m", "agentd.daemon", "--state-dir", str(self.state),
                 "--ctl", self.ctl, "--pub", self.pub, "--node-name", self.node, "--interval", "0.5", "--simulate-gpus", "2"],
                stdout=subprocess.DEVNULL, stderr=err, env=env)
        wait_for(lambda: self.call(Hello()).get("ok"), timeout_s=30, what=f"agentd {self.node} in {self.ns}", poll_s=0.2)

    def call(self, req):
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"agentd {self.node} exited: {self.log.read_text()[-2000:]}")
        out = subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, str(CALL), self.ctl,
                              str(self.keys / "server.key"), str(self.operator_keys), msgspec.json.encode(req).decode()],
                             capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def test_migration_across_network_namespaces_with_curve(netns, tmp_path):
    operator_keys = tmp_path / "operator-keys"
    operator_keys.mkdir()
    zmq.auth.create_certificates(str(operator_keys), "client")
    a, b = NsDaemon(tmp_path, "a", operator_keys), NsDaemon(tmp_path, "b", operator_keys)
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
