"""A client written from docs/protocol.md alone, with pyzmq and msgpack: no project code.

It starts a real agentd as a subprocess (tests/agentd_proc.py) and then only speaks the wire
protocol as the document describes it: hello, the stream with a late join (snapshot, drop
``seq`` at or below it), submit, pause, resume, priority, cancel, error replies that echo the
request id, the integer map keys, the epoch, and what a frame over the limit gets. Where the
document states a fact (the frame limit, the capabilities), the test reads it from the document.
"""

from __future__ import annotations

import itertools
import random
import re
import sys
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from tests.agentd_proc import start_agentd

pytestmark = pytest.mark.timeout(180)
DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
VERSION = int(re.search(r"^# agentd wire protocol, version (\d+)$", DOC, re.M).group(1))
MAX_FRAME = int(re.search(r"Both directions: (\d+) bytes per frame", DOC).group(1))
DOCUMENTED_CAPS = set(re.findall(r"^\| `([a-z]+)` \| ", DOC.split("## Capabilities", 1)[1].split("\n## ", 1)[0], re.M))


def unpack(body: bytes) -> dict:
    # The document: some maps have integer keys (GPU indexes), so string-only keys are not assumed.
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


class Client:
    """DEALER for requests, SUB for the stream, as docs/protocol.md describes them."""

    def __init__(self, ctx: zmq.Context, ctl: str) -> None:
        host, port = ctl.removeprefix("tcp://").rsplit(":", 1)
        assert host == "127.0.0.1", ctl
        # Identity: connect from an own random 127.A.B.C so the kernel's TCP table names us.
        src = f"127.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
        self.ctx = ctx
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)
        self.dealer.connect(f"tcp://{src}:0;{host}:{port}")
        self.ids = itertools.count(1 << 33)  # any 64-bit integer is a valid id
        self.sub: zmq.Socket | None = None
        self.epoch: int | None = None
        self.seq = 0

    def send_raw(self, body: bytes) -> None:
        self.dealer.send(body)

    def recv(self, timeout_s: float) -> dict | None:
        if not self.dealer.poll(int(timeout_s * 1000), zmq.POLLIN):
            return None
        return unpack(self.dealer.recv())

    def call(self, cmd: str, timeout_s: float = 30.0, **fields) -> dict:
        req_id = next(self.ids)
        self.send_raw(msgpack.packb({"v": VERSION, "cmd": cmd, "id": req_id, **fields}, use_bin_type=True))
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self.recv(max(0.01, deadline - time.monotonic()))
            assert reply is not None, f"no reply to {cmd} within {timeout_s} s"
            if reply["id"] == req_id:  # replies may come in any order: match by id
                return reply

    def ok(self, cmd: str, **fields) -> dict:
        reply = self.call(cmd, **fields)
        assert reply["ok"] is True, reply
        return reply

    def subscribe(self, endpoint: str) -> None:
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(endpoint)

    def next_stream(self, timeout_s: float) -> dict | None:
        assert self.sub is not None
        if not self.sub.poll(int(timeout_s * 1000), zmq.POLLIN):
            return None
        topic, body = self.sub.recv_multipart()
        msg = unpack(body)
        assert topic.decode() == msg["t"], (topic, msg["t"])
        return msg

    def close(self) -> None:
        for sock in (self.dealer, self.sub):
            if sock is not None:
                sock.close(0)


@pytest.fixture
def node(tmp_path):
    proc = start_agentd(tmp_path, node="indep", simulate_gpus=1, interval=0.5)
    yield proc
    proc.stop()


@pytest.fixture
def client(node):
    ctx = zmq.Context()
    c = Client(ctx, node.ctl)
    yield c
    c.close()
    ctx.term()


def _until(client: Client, pred, what: str, timeout_s: float = 30.0) -> dict:
    """Read the stream (dropping what the snapshot covered) until a message satisfies ``pred``."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"the stream did not show {what} within {timeout_s} s"
        msg = client.next_stream(min(left, 1.0))
        if msg is None:
            continue
        assert msg["epoch"] == client.epoch, "epoch changed: the daemon restarted in the middle of the test"
        if msg["seq"] <= client.seq:
            continue  # already in the snapshot, or seen
        assert msg["seq"] == client.seq + 1, f"seq gap {client.seq} -> {msg['seq']} while subscribed to every topic"
        client.seq = msg["seq"]
        if pred(msg):
            return msg


def test_a_client_from_the_document_alone(node, client):
    # Handshake.
    hello = client.ok("hello")
    assert hello["protocol"] == VERSION and hello["node"] == "indep"
    assert isinstance(hello["epoch"], int) and hello["epoch"] > 0
    assert hello["role"] == "admin", hello  # root (or agentd's own user) on this node
    assert set(hello["capabilities"]) <= DOCUMENTED_CAPS, set(hello["capabilities"]) - DOCUMENTED_CAPS
    assert {"jobs", "pause", "priority", "cancel"} <= set(hello["capabilities"])

    # Late join: subscribe first, see the stream flowing, then take the snapshot.
    client.subscribe(hello["pub_endpoint"])
    early = []
    deadline = time.monotonic() + 20
    while not early:
        assert time.monotonic() < deadline, "no stream message within 20 s of subscribing"
        msg = client.next_stream(1.0)
        if msg is not None:
            early.append(msg)
    snap = client.ok("snapshot", history=1)
    assert snap["epoch"] == hello["epoch"] and snap["seq"] >= early[0]["seq"]
    client.epoch, client.seq = snap["epoch"], snap["seq"]
    assert snap["inventory"]["gpus"][0]["simulated"] is True
    sample = _until(client, lambda m: m["t"] == "sample", "a sample after the snapshot")
    assert sample["seq"] > snap["seq"] and sample["sample"]["node"] == "indep"

    # Submit: only argv and name; every other spec field takes its documented default.
    sleeper = [sys.executable, "-c", "import time; time.sleep(300)"]
    job = client.ok("submit", spec={"argv": sleeper, "name": "indep-client", "gpus": 1})["job"]
    job_id = job["id"]
    assert job_id.startswith("indep.") and job.get("priority", 0) == 0  # omitted default reads as 0
    _until(client, lambda m: m["t"] == "job" and m["job"]["id"] == job_id and m["job"]["state"] == "running",
           "the job running")
    # Integer map keys: a job's GPU maps are keyed by GPU index (msgpack ints, not strings).
    with_gpu = _until(client, lambda m: m["t"] == "sample" and any(
        cg["job_id"] == job_id and cg.get("gpu_mem_bytes") for cg in m["sample"].get("jobs", [])), "the job's GPU memory")
    cg = next(cg for cg in with_gpu["sample"]["jobs"] if cg["job_id"] == job_id)
    assert list(cg["gpu_mem_bytes"]) == [0] and isinstance(cg["gpu_mem_bytes"][0], int), cg

    # Pause, resume, priority: each reply is the job after the action; the stream says so too.
    assert client.ok("pause", job=job_id)["job"]["state"] == "paused"
    _until(client, lambda m: m["t"] == "job" and m["job"]["id"] == job_id and m["job"]["state"] == "paused",
           "the job paused")
    assert client.ok("resume", job=job_id)["job"]["state"] == "running"
    assert client.ok("priority", job=job_id, priority=-3)["job"]["priority"] == -3
    _until(client, lambda m: m["t"] == "job" and m["job"]["id"] == job_id and m["job"].get("priority", 0) == -3,
           "the new priority")

    # A second late joiner sees the job's current state in its snapshot.
    late = client.ok("snapshot", history=0)
    assert late["epoch"] == client.epoch and late["seq"] >= client.seq
    mine = [j for j in late["jobs"] if j["id"] == job_id]
    assert mine and mine[0]["state"] == "running" and mine[0]["priority"] == -3

    # Cancel: the reply is the ended job, or the job still ending (the stream carries the end).
    cancelled = client.ok("cancel", job=job_id, grace_s=1.0)["job"]
    if cancelled["state"] != "cancelled":
        _until(client, lambda m: m["t"] == "job" and m["job"]["id"] == job_id and m["job"]["state"] == "cancelled",
               "the job cancelled")


def test_errors_echo_the_request_id(client):
    big_id = (1 << 40) + 5
    client.send_raw(msgpack.packb({"v": VERSION, "cmd": "no-such-command", "id": big_id}))
    reply = client.recv(20)
    assert reply is not None and reply["ok"] is False and reply["id"] == big_id and reply["code"] == 405, reply
    assert reply["field"] == "cmd"
    reply = client.call("pause", job="indep.999")
    assert reply["ok"] is False and reply["code"] == 404 and reply["field"] == "job", reply
    client.send_raw(msgpack.packb({"v": VERSION + 1, "cmd": "hello", "id": 7}))
    reply = client.recv(20)
    assert reply == {**reply, "ok": False, "id": 7, "code": 426, "field": "v"}, reply
    client.send_raw(b"\xc1 not msgpack")  # no readable id: the error says id 0
    reply = client.recv(20)
    assert reply is not None and reply["ok"] is False and reply["id"] == 0 and reply["code"] == 400, reply
    reply = client.call("submit", spec={"argv": ["true"], "no_such_field": 1})
    assert reply["ok"] is False and reply["code"] == 400 and reply["field"].startswith("spec"), reply


def test_a_frame_over_the_limit_is_not_answered_and_the_client_reconnects(client):
    """What the document says: the connection is dropped before agentd reads the request, so no
    reply comes; the DEALER reconnects by itself and later requests are answered."""
    client.ok("hello")
    client.send_raw(msgpack.packb({"v": VERSION, "cmd": "hello", "id": 555, "actor": "x" * MAX_FRAME}))
    assert client.recv(3.0) is None, "a frame over the limit got a reply: docs/protocol.md says it does not"
    deadline = time.monotonic() + 30
    while True:  # requests sent while the connection is down may be lost with it: retry
        req_id = next(client.ids)
        client.send_raw(msgpack.packb({"v": VERSION, "cmd": "hello", "id": req_id}))
        reply = client.recv(2.0)
        while reply is not None and reply["id"] != req_id:
            reply = client.recv(2.0)
        if reply is not None:
            assert reply["ok"] is True and reply["node"] == "indep"
            break
        assert time.monotonic() < deadline, "no answer after a frame over the limit: the client did not reconnect"


def test_a_restart_shows_as_a_new_epoch(node, client):
    hello = client.ok("hello")
    client.subscribe(hello["pub_endpoint"])
    deadline = time.monotonic() + 20
    first = None
    while first is None:
        assert time.monotonic() < deadline, "no stream message within 20 s"
        first = client.next_stream(1.0)
    assert first["epoch"] == hello["epoch"]
    node.stop()
    node.start()  # same endpoints, same state dir: the SUB and DEALER reconnect by themselves
    deadline = time.monotonic() + 30
    while True:
        assert time.monotonic() < deadline, "no stream message from the restarted daemon within 30 s"
        msg = client.next_stream(1.0)
        if msg is not None and msg["epoch"] != hello["epoch"]:
            break
    assert msg["epoch"] > 0 and msg["seq"] < 1000  # seq started again with the new epoch
    assert client.ok("hello")["epoch"] == msg["epoch"]
