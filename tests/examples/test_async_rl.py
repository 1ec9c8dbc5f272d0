"""examples/async_rl.py: rollout workers feed the trainer's TCP queue; both report their metrics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.agentd_proc import free_port

ASYNC_RL = Path(__file__).resolve().parents[2] / "examples" / "async_rl.py"


def test_trainer_and_rollouts_report_queue_depth_and_policy_version(tmp_path):
    port = free_port()
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "WORLD_SIZE": "3"}
    args = ["--steps", "8", "--batch", "2", "--rollout-units", "5", "--train-units", "5", "--timeout", "60"]
    procs = []
    try:
        for rank, role in enumerate(("trainer", "rollout", "rollout")):
            env = {**base, "RANK": str(rank), "FLEETDECK_ROLE": role}
            procs.append(subprocess.Popen([sys.executable, str(ASYNC_RL), *args], env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert [p.returncode for p in procs] == [0, 0, 0], results
    trainer_out = results[0][0]
    assert "done trainer steps=8 policy_version=8" in trainer_out
    assert "queue_depth=" in trainer_out and "staleness=" in trainer_out
    for out, _ in results[1:]:
        assert "AGENTD_METRIC rollouts=" in out and "policy_version=" in out


def test_a_rollout_treats_the_trainer_resetting_the_connection_at_its_end_as_the_end():
    """The trainer may exit while a rollout is in flight; the kernel then answers with a reset, not a close."""
    import argparse
    import socket
    import struct
    import threading

    sys.path.insert(0, str(ASYNC_RL.parent))
    try:
        import async_rl
    finally:
        sys.path.remove(str(ASYNC_RL.parent))
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def trainer_that_exits() -> None:
        conn, _ = server.accept()
        conn.recv(4096)  # the first rollout arrives; the trainer is gone before it answers
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    t = threading.Thread(target=trainer_that_exits, daemon=True)
    t.start()
    try:
        args = argparse.Namespace(timeout=10.0, rollout_units=1, tokens=8)
        assert async_rl.rollout(args, ("127.0.0.1", port), worker=1) == 0
    finally:
        t.join(timeout=10)
        server.close()
