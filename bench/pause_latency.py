"""Pause/resume latency: request sent -> reply (which agentd sends only once the kernel
reports the cgroup frozen/thawed), over 50 cycles on a spinning job, through a real agentd.

    .venv/bin/python bench/pause_latency.py [--cycles 50]

Side by side in the same run: the bare RPC round trip (``hello``), so the figure can be read as
transport cost + freezer cost on a noisy machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentd.protocol import JobSpec
from agentd.protocol.messages import Hello, Pause, Resume, Show, Submit
from tests.agentd_proc import start_agentd


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cycles", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        node = start_agentd(Path(tmp), node="bench", simulate_gpus=0)
        try:
            with node.client(timeout_s=30) as c:
                job = c.call(Submit(spec=JobSpec(argv=[sys.executable, "-c", "while True: pass"], name="spin"))).job
                while c.call(Show(job=job.id)).job.state != "running":
                    time.sleep(0.05)
                pause, resume, rtt = [], [], []
                for _ in range(args.cycles):
                    t = time.perf_counter()
                    c.call(Hello())
                    rtt.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    assert c.call(Pause(job=job.id)).job.state == "paused"
                    pause.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    assert c.call(Resume(job=job.id)).job.state == "running"
                    resume.append(time.perf_counter() - t)
                control = c.call(Show(job=job.id)).job.control
        finally:
            node.stop()
    print(f"| measure ({args.cycles} cycles, control: {control}) | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|")
    for name, xs in (("hello round trip (transport only)", rtt), ("pause until kernel reports frozen", pause), ("resume until kernel reports thawed", resume)):
        print(f"| {name} | {statistics.median(xs) * 1e3:.1f} | {pct(xs, 0.99) * 1e3:.1f} | {max(xs) * 1e3:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
