"""CURVE keys: a key's role and Unix user, peer-daemon keys limited to migrations, revocation."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

from agentd.cli import main as agentctl_main
from agentd.protocol import ErrorCode
from agentd.protocol.jobs import JobSpec
from agentd.protocol.messages import Hello, Jobs, Submit
from agentd.protocol.migration import MigrateStatus
from agentd.transport.client import NodeClient, RemoteError, Unreachable
from tests.agentd_proc import AgentdProc, free_port


class SecureNode:
    """A real agentd listening on every address (so CURVE is on), reached over 127.0.0.1."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.keys = tmp / "clientkeys"
        self.keys.mkdir()
        (self.state / "authorized_keys" / "viewer").mkdir(parents=True)
        self.client_dirs: dict[str, Path] = {}
        self.new_key("bootstrap")
        self.authorize("bootstrap", "viewer")
        ctl_port, pub_port = free_port(), free_port()
        args = ["--state-dir", str(self.state), "--ctl", f"tcp://*:{ctl_port}", "--pub", f"tcp://*:{pub_port}",
                "--node-name", "sec", "--interval", "0.5", "--slurm", "off"]
        self.proc = AgentdProc("sec", self.state, f"tcp://127.0.0.1:{ctl_port}", f"tcp://127.0.0.1:{pub_port}", args)
        self.proc.start(wait=False)
        try:
            self._wait_ready()
        except BaseException:  # no fixture owns a daemon that never answered: stop it here
            self.proc.kill9()
            raise

    def _wait_ready(self) -> None:
        self.server_key = str(self.state / "keys" / "server.key")
        deadline = time.monotonic() + 20
        while not Path(self.server_key).exists():  # agentd makes its key pair as it starts
            assert self.proc.proc.poll() is None and time.monotonic() < deadline, self.proc.stderr()[-2000:]
            time.sleep(0.05)
        while True:
            try:
                with self.client("bootstrap", timeout_s=1) as c:
                    c.hello()
                break
            except Unreachable:
                assert time.monotonic() < deadline, self.proc.stderr()[-2000:]

    def new_key(self, name: str) -> Path:
        d = self.tmp / f"k-{name}"
        d.mkdir()
        zmq.auth.create_certificates(str(d), "client")
        self.client_dirs[name] = d
        return d / "client.key"

    def authorize(self, name: str, role: str, user: str = "") -> Path:
        """Through the real `agentctl keys authorize`."""
        argv = ["keys", "authorize", "--state-dir", str(self.state), "--role", role, name, str(self.client_dirs[name] / "client.key")]
        if user:
            argv[2:2] = ["--user", user]
        assert agentctl_main(argv) == 0
        return self.state / "authorized_keys" / role / f"{name}.key"

    def client(self, name: str, timeout_s: float = 5.0) -> NodeClient:
        return NodeClient(self.proc.ctl, server_key=self.server_key, keys_dir=self.client_dirs[name], timeout_s=timeout_s)

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture
def secure(tmp_path):
    node = SecureNode(tmp_path)
    yield node
    node.stop()


def test_a_keys_unix_user_is_who_its_jobs_run_as(secure):
    secure.new_key("ops")
    secure.authorize("ops", "operator", user="root")
    secure.new_key("nobody-key")
    secure.authorize("nobody-key", "user")
    with secure.client("ops") as c:
        hello = c.call(Hello())
        assert (hello.role, hello.user, hello.verified_by) == ("operator", "root", "CURVE key ops")
        job = c.call(Submit(spec=JobSpec(argv=["true"]))).job
        assert job.owner == "root"
    with secure.client("nobody-key") as c:
        with pytest.raises(RemoteError) as err:
            c.call(Submit(spec=JobSpec(argv=["true"])))
        assert err.value.code == ErrorCode.UNAUTHORIZED and "maps to no Unix user" in err.value.message


def test_a_peer_daemon_key_may_only_migrate(secure):
    secure.new_key("peer")
    secure.authorize("peer", "daemon")
    with secure.client("peer") as c:
        c.call(Jobs())  # it may see what a viewer sees
        with pytest.raises(RemoteError) as err:
            c.call(Submit(spec=JobSpec(argv=["id"], user="root")))
        assert err.value.code == ErrorCode.UNAUTHORIZED
        try:  # allowed: it answers (a migration it does not know), or refuses for another reason
            c.call(MigrateStatus(migration_id="no-such-migration"))
        except RemoteError as exc:
            assert exc.code != ErrorCode.UNAUTHORIZED, exc.message


def test_removing_a_key_cuts_its_connections(secure):
    secure.new_key("laptop")
    key_file = secure.authorize("laptop", "operator", user="root")
    with secure.client("laptop", timeout_s=2) as c:
        assert c.call(Hello()).role == "operator"
        key_file.unlink()
        removed_at = time.monotonic()
        # The next request on the open connection is refused or cut, never served as operator.
        deadline = removed_at + 5
        while True:
            try:
                role = c.call(Hello(), timeout_s=0.5).role
            except (RemoteError, Unreachable):
                break
            if role != "operator":
                break
            assert time.monotonic() < deadline, "the removed key still acts as operator"
    # Within a second every connection is cut (the app and agentctl reconnect; this key cannot).
    while "authorized key(s) removed" not in secure.proc.stderr():
        assert time.monotonic() < removed_at + 5, "the connections were not cut after the key was removed"
        time.sleep(0.05)
    with secure.client("laptop", timeout_s=1.5) as c, pytest.raises(Unreachable):  # and it cannot come back
        c.call(Hello())
