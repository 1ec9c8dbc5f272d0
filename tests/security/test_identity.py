"""Who may do what on a shared node: identity from the kernel, roles, ownership, privacy, audit.

Every test runs a real agentd as root and real unprivileged users (``useradd``) who call it with
the real ``agentctl`` from a Python they can run; nothing is faked.
"""

from __future__ import annotations

import json
import socket
import time

import msgspec
import pytest

from agentd.protocol.jobs import JobSpec
from agentd.protocol.messages import Hello, JobMsg, Jobs, Show, Submit
from agentd.transport.client import LinkMessage, LinkSnapshot, NodeClient, NodeLink
from tests.agentd_proc import start_agentd
from tests.users import TestUser, run_as


def agentctl(user: TestUser, python, node: str, *args: str, timeout: float = 30) -> tuple[int, str, str]:
    """Run the real agentctl as ``user`` against ``node``."""
    r = run_as(user, [str(python), "-m", "agentd.cli", "--node", node, *args], timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def whoami(user: TestUser, python, node: str) -> dict:
    code, out, err = agentctl(user, python, node, "--json", "whoami")
    assert code == 0, err
    return json.loads(out)[0]


def wait_state(node, job_id: str, state: str, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    with node.client(timeout_s=5) as c:
        while True:
            job = c.call(Show(job=job_id)).job
            if job.state == state or time.monotonic() > deadline:
                assert job.state == state, f"{job_id} is {job.state}, not {state}: {job.reason}"
                return job
            time.sleep(0.1)


@pytest.fixture
def node(public_dir):
    """A real agentd whose state dir (and so its local socket) every user can reach."""
    proc = start_agentd(public_dir, node="n1", simulate_gpus=2)
    yield proc
    proc.stop()


def test_each_caller_is_who_the_kernel_says_over_tcp_and_ipc(node, make_user, user_python):
    alice = make_user()
    local = f"ipc://{node.state_dir / 'agentd.sock'}"
    with node.client() as c:
        root = c.call(Hello())
    assert (root.role, root.user, root.verified_by) == ("admin", "root", "kernel TCP table")
    assert root.local_endpoint == local
    over_tcp = whoami(alice, user_python, node.ctl)
    assert (over_tcp["user"], over_tcp["role"], over_tcp["verified_by"]) == (alice.name, "user", "kernel TCP table")
    over_ipc = whoami(alice, user_python, local)
    assert (over_ipc["user"], over_ipc["role"], over_ipc["verified_by"]) == (alice.name, "user", "peer credentials")


def test_a_users_job_runs_as_that_user_and_only_admins_pick_another(node, make_user, user_python):
    alice, bob = make_user(), make_user()
    code, out, err = agentctl(alice, user_python, node.ctl, "submit", "--", "sh", "-c", "id -un; id -u")
    assert code == 0, err
    job_id = out.split()[0]
    job = wait_state(node, job_id, "succeeded")
    assert job.owner == alice.name
    code, out, err = agentctl(alice, user_python, node.ctl, "logs", job_id)
    assert code == 0, err
    assert out.split()[:2] == [alice.name, str(alice.uid)]
    # A job spec naming another user is refused for a user...
    spec = {"argv": ["id", "-un"], "user": "root"}
    spec_file = alice.home / "as-root.json"
    run_as(alice, ["sh", "-c", f"echo '{json.dumps(spec)}' > {spec_file}"])
    code, _, err = agentctl(alice, user_python, node.ctl, "submit", "--spec", str(spec_file))
    assert code == 1 and "only an admin may submit as another user" in err
    # ... and honoured for root, who is an admin.
    with NodeClient(node.ctl) as root_client:
        job = root_client.call(Submit(spec=JobSpec(argv=["id", "-un"], user=bob.name))).job
    assert job.owner == bob.name
    wait_state(node, job.id, "succeeded")


def test_users_control_only_their_own_jobs_and_see_only_their_own_secrets(public_dir, make_user, user_python):
    alice, bob, olga = make_user(), make_user(), make_user()
    node = start_agentd(public_dir, node="n1", simulate_gpus=2, extra=["--config", str(_config(public_dir, operators=[olga.name]))])
    try:
        code, out, err = agentctl(alice, user_python, node.ctl, "submit", "--env", "TOKEN=hunter2", "--", "sleep", "300")
        assert code == 0, err
        job_id = out.split()[0]
        wait_state(node, job_id, "running")
        for verb in (["pause", job_id], ["cancel", job_id], ["priority", job_id, "-3"], ["logs", job_id]):
            code, _, err = agentctl(bob, user_python, node.ctl, *verb)
            assert code == 1, (verb, err)
            assert alice.name in err and bob.name in err, err
        code, out, err = agentctl(bob, user_python, node.ctl, "--json", "show", job_id)
        assert code == 0, err
        seen_by_bob = json.loads(out)
        assert seen_by_bob["spec"]["argv"] == ["sleep"] and seen_by_bob["spec"]["env"] == {"TOKEN": ""}
        code, out, err = agentctl(alice, user_python, node.ctl, "--json", "show", job_id)
        seen_by_alice = json.loads(out)
        assert seen_by_alice["spec"]["argv"] == ["sleep", "300"] and seen_by_alice["spec"]["env"] == {"TOKEN": "hunter2"}
        code, out, err = agentctl(bob, user_python, node.ctl, "--json", "jobs")
        assert "hunter2" not in out and "300" not in json.dumps([j["spec"]["argv"] for j in json.loads(out)])
        # The owner may lower its job's priority but not raise it above 0; an operator may.
        code, _, err = agentctl(alice, user_python, node.ctl, "priority", job_id, "5")
        assert code == 1 and "needs an operator" in err
        code, _, err = agentctl(olga, user_python, node.ctl, "priority", job_id, "5")
        assert code == 0, err
        code, _, err = agentctl(olga, user_python, node.ctl, "pause", job_id)
        assert code == 0, err
        code, _, err = agentctl(alice, user_python, node.ctl, "cancel", job_id)
        assert code == 0, err
        audit = [json.loads(line) for line in (node.state_dir / "audit.log").read_text().splitlines()]
        refused = [a for a in audit if a.get("caller") == bob.name and a.get("object") == job_id]
        assert {a["cmd"] for a in refused} >= {"pause", "cancel", "priority", "logs"}
        assert all(a["result"].startswith("refused 403") and a["verified_by"] == "kernel TCP table" for a in refused)
        assert any(a.get("caller") == olga.name and a["cmd"] == "pause" and a["result"] == "ok" for a in audit)
    finally:
        node.stop()


def test_the_stream_carries_no_env_values_or_arguments(node):
    link = NodeLink(node.ctl)
    seen: list[JobMsg] = []
    try:
        deadline = time.monotonic() + 20
        while not any(isinstance(ev, LinkSnapshot) for ev in link.poll(0.2)):
            assert time.monotonic() < deadline, "no snapshot from the node"
        with node.client() as c:
            c.call(Submit(spec=JobSpec(argv=["sleep", "30", "--secret-flag"], env={"TOKEN": "hunter2"})))
            deadline = time.monotonic() + 10
            while not seen and time.monotonic() < deadline:
                seen += [ev.msg for ev in link.poll(0.2) if isinstance(ev, LinkMessage) and isinstance(ev.msg, JobMsg)]
            snap_jobs = c.call(Jobs()).jobs
    finally:
        link.close()
    assert seen, "no job message on the stream"
    for msg in seen:
        assert msg.job.spec.argv == ["sleep"] and msg.job.spec.env == {"TOKEN": ""}
    # Lists for the owner (root here) keep argv but never env values.
    assert snap_jobs[0].spec.argv == ["sleep", "30", "--secret-flag"] and snap_jobs[0].spec.env == {"TOKEN": ""}


def test_an_unverifiable_tcp_caller_may_only_watch(node, make_user, user_python):
    alice = make_user()
    host, port = node.ctl[len("tcp://"):].rsplit(":", 1)
    # Root holds a connection from 127.0.0.1, so the kernel's table cannot say which user a
    # second connection from 127.0.0.1 belongs to: that caller must not get root's rights.
    held = socket.create_connection((host, int(port)))
    try:
        script = ("import sys, zmq, msgspec\n"
                  "from agentd.protocol import encode\n"
                  "from agentd.protocol.messages import Hello, Submit\n"
                  "from agentd.protocol.jobs import JobSpec\n"
                  "s = zmq.Context().socket(zmq.DEALER); s.connect(sys.argv[1]); s.RCVTIMEO = 5000\n"
                  "for req in (Hello(id=1), Submit(id=2, spec=JobSpec(argv=['id']))):\n"
                  "    s.send(encode(req)); print(msgspec.json.encode(msgspec.msgpack.decode(s.recv())).decode())\n")
        r = run_as(alice, [str(user_python), "-c", script, node.ctl])
        assert r.returncode == 0, r.stderr
        hello, submit = (json.loads(line) for line in r.stdout.splitlines())
        assert hello["role"] == "viewer" and hello["user"] == "" and hello["verified_by"] == ""
        assert submit["ok"] is False and submit["code"] == 401
        assert "could not verify who you are" in submit["message"] and "agentd.sock" in submit["message"]
    finally:
        held.close()


def test_a_local_user_cannot_use_daemon_verbs(node, make_user, user_python):
    """Today's hole: any local user could offer and commit a 'migration' that runs as root."""
    alice = make_user()
    script = ("import sys, zmq, msgspec\n"
              "from agentd.protocol import encode\n"
              "from agentd.protocol.migration import MigrateStatus\n"
              "s = zmq.Context().socket(zmq.DEALER); s.connect('ipc://' + sys.argv[1]); s.RCVTIMEO = 5000\n"
              "s.send(encode(MigrateStatus(id=1, migration_id='x'))); print(msgspec.json.encode(msgspec.msgpack.decode(s.recv())).decode())\n")
    r = run_as(alice, [str(user_python), "-c", script, str(node.state_dir / "agentd.sock")])
    assert r.returncode == 0, r.stderr
    reply = json.loads(r.stdout)
    assert reply["ok"] is False and reply["code"] == 401 and "peer daemons" in reply["message"]


def _config(directory, **values) -> object:
    import tomllib  # noqa: F401  (the file must be what agentd's TOML reader accepts)

    path = directory / "agentd-test.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    return path


def test_the_audit_log_names_the_caller_not_what_it_claims(node, make_user, user_python):
    alice = make_user()
    script = ("import sys\n"
              "from agentd.transport.client import NodeClient\n"
              "from agentd.protocol.messages import Submit\n"
              "from agentd.protocol.jobs import JobSpec\n"
              "with NodeClient(sys.argv[1], actor='root') as c: print(c.call(Submit(spec=JobSpec(argv=['true']))).job.id)\n")
    r = run_as(alice, [str(user_python), "-c", script, node.ctl])
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    entries = [json.loads(line) for line in (node.state_dir / "audit.log").read_text().splitlines()]
    mine = [e for e in entries if e.get("cmd") == "submit" and e.get("object") == job_id]
    assert mine and mine[0]["caller"] == alice.name and mine[0]["uid"] == alice.uid and mine[0]["note"] == "root"
    with node.client() as c:
        assert msgspec.structs.asdict(c.call(Show(job=job_id)).job)["owner"] == alice.name
