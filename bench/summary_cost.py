"""What the app's data path pays per relay summary, at a given cluster size: msgpack decoding of
the ``nsum`` batches (the network thread) and ``ClusterState.apply_summaries`` (the GUI thread),
per second of a fleet that reports once a second. No frames, no sockets: the floor under the
app's CPU at that size (issue 15's budget: 10,000 nodes through two relay levels, app < 50 %).

    .venv/bin/python bench/summary_cost.py --nodes 1000 10000 [--phases auto|K]

``--phases``: the summary phases the app takes (``auto``: as the app does, ``summary_phases``;
a number; default all): only the batches of those phases are decoded and applied each tick.

Summaries are SIMULATED nodes shaped like ``agentd.simulate``'s (8 GPUs, 3 running jobs with a
throughput each), every value changing every second, as on a busy fleet.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentd.protocol.relay import (
    SUMMARY_BATCH,
    SUMMARY_PHASES,
    GpuSummary,
    JobSummary,
    NodeSummary,
    SummaryMsg,
    summary_phases,
)
from gui.gcpace import GcPacer
from gui.state import ClusterState

T0 = 1_000_000.0


def summary(n: int, t: float) -> NodeSummary:
    return NodeSummary(node=f"sim-{n:05d}", link="live", wall_s=t, cpu_count=32, cpu_pct=float((n + t) % 100),
                       mem_total_bytes=1 << 36, mem_used_bytes=1 << 34, simulated=True,
                       gpus=[GpuSummary(index=i, util_pct=float((n + i + t) % 100), mem_used_bytes=1 << 30,
                                        mem_total_bytes=1 << 34, temp_c=50.0 + t % 7, power_w=300.0 + t % 11)
                             for i in range(8)],
                       jobs=[JobSummary(id=f"sim-{n:05d}.{k}", name=f"train-{k}", state="running", gpus=[k],
                                        throughput={"tokens_per_s": 100.0 * (n % 7 + 1) + t % 5}) for k in (3, 1, 2)])


def measure(nodes: int, seconds: int, paced: bool, phases: int = SUMMARY_PHASES) -> dict[str, float]:
    clock = [T0]
    state = ClusterState(clock=lambda: clock[0])
    state.apply_summaries([summary(n, T0 - 1) for n in range(nodes)])  # the fleet known (late-join snapshot)
    ticks = []
    for s in range(seconds):
        batches = [[summary(n, T0 + s) for n in range(i, min(i + SUMMARY_BATCH, nodes))]
                   for i in range(0, nodes, SUMMARY_BATCH)]
        ticks.append([msgspec.msgpack.encode(SummaryMsg(node="relay", seq=1 + i, nodes=b, phase=(i + s) % SUMMARY_PHASES))
                      for i, b in enumerate(batches) if (i + s) % SUMMARY_PHASES < phases])  # what reaches the app
    decoder = msgspec.msgpack.Decoder(SummaryMsg)
    decode_s = apply_s = 0.0
    wire = 0
    pacer = GcPacer()
    if paced:
        pacer.install()  # as the app's main() does: the cycle collector between frames
    for s, frames in enumerate(ticks):
        clock[0] = T0 + s + 0.5
        t0 = time.thread_time()
        msgs = [decoder.decode(f) for f in frames]
        t1 = time.thread_time()
        for m in msgs:
            state.apply_summaries(m.nodes)
        t2 = time.thread_time()
        decode_s += t1 - t0
        apply_s += t2 - t1
        wire += sum(map(len, frames))
        pacer.tick()
    pacer.uninstall()
    return {"decode_pct": 100 * decode_s / seconds, "apply_pct": 100 * apply_s / seconds,
            "mib_per_s": wire / seconds / 2**20}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--seconds", type=int, default=5, help="simulated seconds of summaries per size")
    p.add_argument("--phases", default=str(SUMMARY_PHASES), help="summary phases taken: a number, or auto")
    p.add_argument("--python-gc", action="store_true", help="Python's own cycle collector (the app paces it: gui/gcpace.py)")
    args = p.parse_args()
    print("| nodes | phases | decode (% of a core) | apply (% of a core) | together | wire |")
    print("|---|---|---|---|---|---|")
    for n in args.nodes:
        k = summary_phases(n) if args.phases == "auto" else int(args.phases)
        r = measure(n, args.seconds, paced=not args.python_gc, phases=k)
        print(f"| {n:,} | {k} | {r['decode_pct']:.1f} % | {r['apply_pct']:.1f} % | {r['decode_pct'] + r['apply_pct']:.1f} % "
              f"| {r['mib_per_s']:.1f} MiB/s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
