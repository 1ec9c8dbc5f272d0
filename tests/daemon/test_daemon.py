"""A real agentd on loopback: hello, snapshot, the stream, errors, and clean shutdown."""

import os
import socket
import subprocess
import sys
import time

import msgspec
import pytest
import zmq

from agentd.protocol import ErrorCode
from agentd.protocol.messages import Heartbeat, Hello, HelloReply, Jobs, SampleMsg, Show, Snapshot, SnapshotReply
from agentd.transport.client import LinkMessage, LinkSnapshot, LinkState, NodeClient, NodeLink, RemoteError, Unreachable
from tests.agentd_proc import REPO, free_port, start_agentd


def test_hello_names_node_stream_and_capabilities(agentd):
    with agentd.client() as c:
        hello = c.hello()
    assert isinstance(hello, HelloReply)
    assert hello.node == "n1"
    assert hello.pub_endpoint == agentd.pub
    assert "telemetry" in hello.capabilities


def test_snapshot_carries_inventory_samples_and_sequence(agentd):
    time.sleep(1.2)
    with agentd.client() as c:
        snap = c.call(Snapshot(history=2))
    assert isinstance(snap, SnapshotReply)
    assert snap.seq > 0
    assert snap.inventory.gpu_backend == "simulated" and len(snap.inventory.gpus) == 2
    assert snap.inventory.cpu_count == os.cpu_count()
    assert 1 <= len(snap.samples) <= 2
    assert snap.samples[-1].host.mem_total_bytes > 0


def test_stream_sequence_is_gapless_and_samples_flow(agentd):
    link = NodeLink(agentd.ctl)
    try:
        seqs, samples, snapshot_seq = [], 0, None
        deadline = time.monotonic() + 10
        while samples < 4 and time.monotonic() < deadline:
            for ev in link.poll(0.5):
                if isinstance(ev, LinkSnapshot):
                    snapshot_seq = ev.reply.seq
                elif isinstance(ev, LinkMessage):
                    seqs.append(ev.msg.seq)
                    samples += isinstance(ev.msg, SampleMsg)
        assert samples >= 4, "fewer than 4 samples in 10 s at a 0.5 s interval"
        assert snapshot_seq is not None and seqs[0] == snapshot_seq + 1
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert link.state == "live"
    finally:
        link.close()


def test_heartbeat_when_idle(tmp_path):
    proc = start_agentd(tmp_path, node="slow", simulate_gpus=0, interval=5)
    link = NodeLink(proc.ctl)
    try:
        beats = 0
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and beats < 2:
            beats += sum(isinstance(ev, LinkMessage) and isinstance(ev.msg, Heartbeat) for ev in link.poll(0.5))
        assert beats >= 2, "no heartbeat within 6 s while the sample interval is 5 s"
    finally:
        link.close()
        proc.stop()


def test_unknown_job_is_not_found_and_names_the_job(agentd):
    with agentd.client() as c:
        with pytest.raises(RemoteError) as err:
            c.call(Show(job="n1.999"))
        # Without job control the node says so; with it, the job is unknown.
        assert err.value.code in (ErrorCode.NOT_FOUND, ErrorCode.UNAVAILABLE)
        with pytest.raises(RemoteError) as err:
            c.call(Show(job="other.1"))
        assert err.value.code in (ErrorCode.NOT_FOUND, ErrorCode.UNAVAILABLE)


def _raw_dealer(ctx, endpoint):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    return s


def test_fuzzed_frames_get_error_replies_and_the_daemon_keeps_serving(agentd):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    ctx = zmq.Context()
    dealer = _raw_dealer(ctx, agentd.ctl)
    good = msgspec.msgpack.encode({"v": 1, "cmd": "hello", "id": 1})
    try:
        @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.one_of(
            st.binary(max_size=300),
            st.builds(lambda b, i, x: b[:i] + x + b[i:], st.just(good), st.integers(0, len(good)), st.binary(min_size=1, max_size=8)),
            st.lists(st.binary(max_size=40), min_size=2, max_size=4),
        ))
        def throw(frames):
            if isinstance(frames, list):
                dealer.send_multipart(frames)  # multi-frame: cannot be routed, dropped and counted
                return
            dealer.send(frames)
            assert dealer.poll(3000), "daemon did not answer a malformed frame within 3 s"
            reply = msgspec.msgpack.decode(dealer.recv())
            assert isinstance(reply, dict) and "ok" in reply
            if reply["ok"] is False:
                assert reply["code"] in {int(c) for c in ErrorCode} and reply["message"]

        throw()
        # Random bytes at the stream socket too (a raw TCP peer speaking nonsense).
        port = int(agentd.pub.rsplit(":", 1)[1])
        for junk in (b"\x00" * 64, os.urandom(512), b"GET / HTTP/1.0\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(junk)
        with agentd.client(timeout_s=3) as c:
            assert c.call(Hello()).node == "n1"
        assert agentd.proc.poll() is None
    finally:
        dealer.close()
        ctx.term()


def test_oversized_message_is_refused_without_harm(agentd):
    ctx = zmq.Context()
    dealer = _raw_dealer(ctx, agentd.ctl)
    try:
        dealer.send(b"\x00" * (9 * 1024 * 1024))
        time.sleep(0.3)
    finally:
        dealer.close()
        ctx.term()
    with agentd.client(timeout_s=3) as c:
        assert c.hello().node == "n1"


def test_unreachable_node_times_out_with_one_line():
    with NodeClient(f"tcp://127.0.0.1:{free_port()}", timeout_s=0.5) as c, pytest.raises(Unreachable) as err:
        c.call(Hello())
    assert "did not answer within 0.5 s" in str(err.value)


def _run_agentd(args, timeout=20):
    return subprocess.run([sys.executable, "-m", "agentd.daemon", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_port_in_use_is_a_one_line_error(agentd, tmp_path):
    r = _run_agentd(["--state-dir", str(tmp_path / "s2"), "--ctl", agentd.ctl, "--pub", f"tcp://127.0.0.1:{free_port()}"])
    assert r.returncode == 2
    assert "cannot bind the request (--ctl) socket" in r.stderr and "Traceback" not in r.stderr


def test_unwritable_state_dir_and_bad_options(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = _run_agentd(["--state-dir", str(blocker / "sub")])
    assert r.returncode == 2 and "state dir" in r.stderr and "Traceback" not in r.stderr
    r = _run_agentd(["--state-dir", str(tmp_path / "s"), "--interval", "0.01"])
    assert r.returncode == 2 and "--interval" in r.stderr
    r = _run_agentd(["--bogus"])
    assert r.returncode == 2 and "unrecognized arguments" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("interval = 'fast'\n")
    r = _run_agentd(["--config", str(bad), "--state-dir", str(tmp_path / "s")])
    assert r.returncode == 2 and "interval" in r.stderr and "Traceback" not in r.stderr


def test_sigterm_stops_cleanly(tmp_path):
    proc = start_agentd(tmp_path, node="term")
    assert proc.stop() == 0
    assert "agentd stopped" in proc.stderr()


def test_link_goes_down_and_comes_back_when_the_daemon_restarts(tmp_path):
    proc = start_agentd(tmp_path, node="phoenix", interval=0.5)
    link = NodeLink(proc.ctl, hello_timeout_s=1.0)
    states = []

    def pump(until, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for ev in link.poll(0.2):
                if isinstance(ev, LinkState):
                    states.append(ev.state)
            if until():
                return True
        return False

    try:
        assert pump(lambda: link.state == "live", 10)
        pump(lambda: False, 1.5)  # a few samples: a resync right after the snapshot is over
        assert link.state == "live", f"states seen: {states}"
        proc.kill9()
        assert pump(lambda: link.state == "down", 15), f"states seen: {states}"
        assert "stale" in states
        proc.start()
        assert pump(lambda: link.state == "live", 20), f"states seen: {states}"
    finally:
        link.close()
        proc.stop()


def test_non_loopback_requires_curve_keys_and_roles(tmp_path):
    import zmq.auth

    state = tmp_path / "secure"
    ctl_port, pub_port = free_port(), free_port()
    args = ["--state-dir", str(state), "--ctl", f"tcp://*:{ctl_port}", "--pub", f"tcp://*:{pub_port}", "--node-name", "sec"]
    r = _run_agentd(args)
    assert r.returncode == 2 and "no authorized client keys" in r.stderr
    server_key = state / "keys" / "server.key"
    assert server_key.exists()
    keys = tmp_path / "clientkeys"
    keys.mkdir()
    zmq.auth.create_certificates(str(keys), "viewer")
    zmq.auth.create_certificates(str(keys), "stranger")
    (state / "authorized_keys" / "viewer").mkdir(parents=True)
    (state / "authorized_keys" / "viewer" / "alice.key").write_bytes((keys / "viewer.key").read_bytes())
    from tests.agentd_proc import AgentdProc

    proc = AgentdProc("sec", state, f"tcp://127.0.0.1:{ctl_port}", f"tcp://127.0.0.1:{pub_port}", args).start(wait=False)
    try:
        time.sleep(1.5)
        # No key at all: the CURVE handshake never completes, so no answer.
        with NodeClient(proc.ctl, timeout_s=1.0) as c, pytest.raises(Unreachable):
            c.call(Hello())
        # An unknown key is refused by the authenticator.
        kd = tmp_path / "k-stranger"
        kd.mkdir()
        for ext in ("key", "key_secret"):
            (kd / f"client.{ext}").write_bytes((keys / f"stranger.{ext}").read_bytes())
        with NodeClient(proc.ctl, server_key=str(server_key), keys_dir=kd, timeout_s=1.0) as c, pytest.raises(Unreachable):
            c.call(Hello())
        kd = tmp_path / "k-viewer"
        kd.mkdir()
        for ext in ("key", "key_secret"):
            (kd / f"client.{ext}").write_bytes((keys / f"viewer.{ext}").read_bytes())
        with NodeClient(proc.ctl, server_key=str(server_key), keys_dir=kd, timeout_s=3.0) as c:
            hello = c.call(Hello())
            assert hello.role == "viewer"
            c.call(Jobs()) if "jobs" in hello.capabilities else None
            with pytest.raises(RemoteError) as err:
                from agentd.protocol.messages import Pause

                c.call(Pause(job="sec.1"))
            assert err.value.code == ErrorCode.UNAUTHORIZED and "alice" in err.value.message
    finally:
        proc.stop()
