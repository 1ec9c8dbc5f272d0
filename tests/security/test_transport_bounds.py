"""Hostile clients at the socket level: agentd stays bounded and keeps answering legit clients.

The attacks speak ZMTP directly over a raw TCP socket where libzmq itself would refuse to send
them (a libzmq client keeps an unfinished multipart message on its own side).
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import zmq

from agentd.protocol import encode
from agentd.protocol.messages import Hello, Snapshot
from agentd.transport.client import NodeClient

RSS_BOUND_MIB = 64


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * 4096 / (1 << 20)


def zmtp_dealer(host: str, port: int) -> socket.socket:
    """A raw TCP connection that has done the ZMTP 3.0 NULL handshake as a DEALER."""
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(b"\xff" + b"\x00" * 8 + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\x00") + b"\x00" * 32)
    body = b"\x05READY" + bytes([11]) + b"Socket-Type" + struct.pack(">I", 6) + b"DEALER"
    s.sendall(bytes([0x04, len(body)]) + body)
    return s


def legit_hello(endpoint: str) -> str:
    with NodeClient(endpoint, timeout_s=10) as c:
        return c.call(Hello()).node


def test_a_multipart_message_that_never_ends_is_cut(agentd):
    host, port = agentd.ctl[len("tcp://"):].rsplit(":", 1)
    base = rss_mib(agentd.pid)
    peak = [base]
    sent_mib = [0]
    stop = time.monotonic() + 4.0
    frame = bytes([0x03]) + struct.pack(">Q", 1 << 20) + b"x" * (1 << 20)  # MORE|LONG, 1 MiB

    def attack() -> None:
        while time.monotonic() < stop:
            try:
                with zmtp_dealer(host, int(port)) as s:
                    while time.monotonic() < stop:
                        s.sendall(frame)
                        sent_mib[0] += 1
            except OSError:  # cut by agentd: come back, as an attacker would
                time.sleep(0.02)

    threads = [threading.Thread(target=attack) for _ in range(2)]
    for t in threads:
        t.start()
    while time.monotonic() < stop:
        peak[0] = max(peak[0], rss_mib(agentd.pid))
        time.sleep(0.005)
    for t in threads:
        t.join()
    assert sent_mib[0] > 2 * RSS_BOUND_MIB, f"the attack sent only {sent_mib[0]} MiB: it proves nothing"
    print(f"multipart flood: {sent_mib[0]} MiB sent, agentd grew {peak[0] - base:.0f} MiB")
    assert peak[0] - base <= RSS_BOUND_MIB, f"agentd grew {peak[0] - base:.0f} MiB under {sent_mib[0]} MiB of unfinished message"
    assert legit_hello(agentd.ctl) == "n1"
    assert "a multipart message that never ends" in agentd.stderr()


def test_replies_nobody_reads_stay_bounded(agentd):
    ctx = zmq.Context()
    socks = []
    base = rss_mib(agentd.pid)
    peak = base
    try:
        for _ in range(6):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVHWM, 1)
            s.setsockopt(zmq.RCVBUF, 4096)
            s.connect(agentd.ctl)
            socks.append(s)
        request = encode(Snapshot(history=300))
        stop = time.monotonic() + 6.0
        while time.monotonic() < stop:
            for s in socks:
                try:
                    s.send(request, zmq.NOBLOCK)
                except zmq.Again:
                    pass
            peak = max(peak, rss_mib(agentd.pid))
            time.sleep(0.002)
        assert peak - base <= RSS_BOUND_MIB, f"agentd grew {peak - base:.0f} MiB holding replies nobody reads"
        assert legit_hello(agentd.ctl) == "n1"
    finally:
        for s in socks:
            s.close(linger=0)
        ctx.term()


def test_garbage_framing_is_dropped_and_the_daemon_answers(agentd):
    host, port = agentd.ctl[len("tcp://"):].rsplit(":", 1)
    for junk in (b"GET / HTTP/1.0\r\n\r\n", b"\xff" * 64, b"\x00" * 10_000, bytes(range(256)) * 40):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            try:
                s.sendall(junk)
                s.recv(64)
            except OSError:
                pass
    with zmtp_dealer(host, int(port)) as s:  # a frame over the size limit: the connection is dropped
        s.sendall(bytes([0x02]) + struct.pack(">Q", 1 << 40))
    assert legit_hello(agentd.ctl) == "n1"
