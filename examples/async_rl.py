#!/usr/bin/env python3
"""An async-RL-shaped group (stdlib only): rollout workers produce into a TCP queue the trainer serves.

The role comes from ``--role`` or $FLEETDECK_ROLE (``trainer`` or ``rollout``; without either,
rank 0 is the trainer). The trainer listens on MASTER_ADDR:MASTER_PORT (so put the trainer role
first in the group: rank 0 is its first rank). Each rollout worker generates a rollout (CPU work),
sends it with the policy version it used, and blocks until the trainer has queued it (a full queue
holds producers back) and answers with the current policy version. The trainer takes ``--batch``
rollouts per step and bumps the policy version. Metrics: the trainer reports ``step``,
``queue_depth``, ``policy_version``, ``staleness`` (versions behind, oldest rollout of the batch)
and ``samples_per_s``; a worker reports ``rollouts``, ``policy_version`` and ``tokens_per_s``.

    FLEETDECK_ROLE=trainer MASTER_PORT=29700 python examples/async_rl.py --steps 50 &
    FLEETDECK_ROLE=rollout MASTER_PORT=29700 python examples/async_rl.py
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import sys
import threading
import time

try:
    from agentd import report
except ImportError:
    report = None  # type: ignore[assignment]


def emit(**values: float) -> None:
    if report is not None and report.enabled():
        report.metric(**values)
    else:
        print("AGENTD_METRIC " + " ".join(f"{k}={v:.6g}" for k, v in values.items()), flush=True)


def work(units: int) -> None:
    x = 1
    for _ in range(units * 1000):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF


class Trainer:
    """Serves the rollout queue; consumes it in batches."""

    def __init__(self, args: argparse.Namespace, addr: tuple[str, int]) -> None:
        self.args = args
        self.queue: queue.Queue[dict[str, int]] = queue.Queue(maxsize=args.queue_size)
        self.version = 0
        self.done = threading.Event()
        self.server = socket.create_server(addr, backlog=64)

    def serve(self) -> None:
        self.server.settimeout(0.5)
        while not self.done.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            for line in f:
                rollout = json.loads(line)
                while not self.done.is_set():
                    try:
                        self.queue.put(rollout, timeout=0.5)  # blocks the producer while the queue is full
                        break
                    except queue.Full:
                        continue
                f.write(json.dumps({"policy_version": self.version, "done": self.done.is_set()}).encode() + b"\n")
                f.flush()
                if self.done.is_set():
                    return

    def run(self) -> int:
        threading.Thread(target=self.serve, daemon=True).start()
        for step in range(1, self.args.steps + 1):
            t0 = time.perf_counter()
            batch: list[dict[str, int]] = []
            while len(batch) < self.args.batch:
                try:
                    batch.append(self.queue.get(timeout=self.args.timeout))
                except queue.Empty:
                    print(f"async_rl trainer: no rollout for {self.args.timeout:.0f} s at step {step}; "
                          "are the rollout workers running and pointed at MASTER_ADDR:MASTER_PORT?",
                          file=sys.stderr, flush=True)
                    return 3
            work(self.args.train_units)
            staleness = self.version - min(r["version"] for r in batch)
            self.version += 1
            emit(step=step, queue_depth=self.queue.qsize(), policy_version=self.version, staleness=staleness,
                 samples_per_s=len(batch) / max(time.perf_counter() - t0, 1e-9))
        self.done.set()
        time.sleep(1.0)  # let the handlers tell the workers they are done
        print(f"done trainer steps={self.args.steps} policy_version={self.version}", flush=True)
        return 0


def rollout(args: argparse.Namespace, addr: tuple[str, int], worker: int) -> int:
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            conn = socket.create_connection(addr, timeout=args.timeout)
            break
        except OSError as e:
            if time.monotonic() > deadline:
                print(f"async_rl rollout {worker}: cannot reach the trainer at {addr[0]}:{addr[1]} ({e}); "
                      "check MASTER_ADDR/MASTER_PORT", file=sys.stderr)
                return 3
            time.sleep(0.2)
    version, n = 0, 0
    with conn, conn.makefile("rwb") as f:
        while True:
            t0 = time.perf_counter()
            work(args.rollout_units)
            try:
                f.write(json.dumps({"worker": worker, "version": version, "tokens": args.tokens}).encode() + b"\n")
                f.flush()
                line = f.readline()
            except (ConnectionResetError, BrokenPipeError):
                line = b""  # the trainer finished and exited while this rollout was on its way: the same end
            if not line:
                print(f"rollout {worker}: the trainer closed the queue after {n} rollouts", flush=True)
                return 0
            reply = json.loads(line)
            version, n = int(reply["policy_version"]), n + 1
            emit(rollouts=n, policy_version=version, tokens_per_s=args.tokens / max(time.perf_counter() - t0, 1e-9))
            if reply.get("done"):
                print(f"done rollout {worker} rollouts={n}", flush=True)
                return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--role", choices=("trainer", "rollout"), default=None)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=4, help="rollouts per training step")
    p.add_argument("--queue-size", type=int, default=16)
    p.add_argument("--rollout-units", type=int, default=200, help="work units per rollout")
    p.add_argument("--train-units", type=int, default=200, help="work units per training step")
    p.add_argument("--tokens", type=int, default=512, help="tokens per rollout")
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args(argv)
    role = args.role or os.environ.get("FLEETDECK_ROLE") or ("trainer" if os.environ.get("RANK", "0") == "0"
                                                              else "rollout")
    addr = (os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", "29700")))
    if role == "trainer":
        return Trainer(args, addr).run()
    return rollout(args, addr, int(os.environ.get("RANK", "1")))


if __name__ == "__main__":
    sys.exit(main())
