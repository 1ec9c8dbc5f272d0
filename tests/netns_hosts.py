"""Hosts of their own for tests: two network namespaces joined by a veth pair, each running a
real agentd on its own address with CURVE on (it binds a non-loopback address).

``netns`` (a fixture) makes the namespaces and removes them; ``NsDaemon`` starts agentd in one
and sends it requests from inside it (tests/migration/netns_call.py) with an operator key.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import msgspec
import zmq.auth

from agentd.protocol.messages import Hello
from tests.agentd_proc import REPO
from tests.waiting import wait_for

NS = {"a": ("fd-a", "10.231.0.1"), "b": ("fd-b", "10.231.0.2")}
CALL = Path(__file__).parent / "migration" / "netns_call.py"


def sh(*args):
    subprocess.run(args, check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def namespaces():
    """The namespaces of ``NS`` joined by a veth pair (the ``netns`` fixture of tests/conftest.py)."""
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
        # An operator key acting as root on this node (jobs need a Unix user to run as).
        public, _ = zmq.auth.load_certificate(str(operator_keys / "client.key"))
        (op / "tester.key").write_text(f'metadata\n    user = "root"\ncurve\n    public-key = "{public.decode()}"\n')
        self.ctl, self.pub = f"tcp://{self.addr}:7710", f"tcp://{self.addr}:7711"
        self.operator_keys = operator_keys
        self.proc = None
        self.log = tmp / f"{node}.stderr.log"

    def authorize_daemon(self, other: "NsDaemon"):
        d = self.state / "authorized_keys" / "daemon"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(other.keys / "client.key", d / f"{other.node}.key")

    def start(self, **options):
        """Start agentd in the namespace; ``options`` are agentd config options (a TOML file)."""
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        config = self.state.parent / f"{self.node}.toml"
        config.write_text("".join(f"{k} = {v!r}\n" for k, v in options.items()))
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, "-m", "agentd.daemon", "--state-dir", str(self.state),
                 "--ctl", self.ctl, "--pub", self.pub, "--node-name", self.node, "--interval", "0.5", "--simulate-gpus", "2", "--config", str(config)],
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


def two_hosts(tmp: Path) -> tuple[Path, NsDaemon, NsDaemon]:
    """An operator's client keys (``tmp/operator-keys``) and the daemons of hosts a and b (not
    started), each accepting that operator as root."""
    keys = tmp / "operator-keys"
    keys.mkdir()
    zmq.auth.create_certificates(str(keys), "client")
    return keys, NsDaemon(tmp, "a", keys), NsDaemon(tmp, "b", keys)
