"""The app at scale: 1,000 SIMULATED nodes through one relay, beside 100 followed directly.

Everything real but the nodes: ``python -m agentd.simulate K --gpus 8`` (K simulated nodes on
real loopback sockets) in its own process, a real ``agentd --relay`` in another, and the app
(MainWindow on a LiveSource, offscreen) in this process, so this process's CPU time and RSS are
the app's (GUI thread + network thread). Measured after every node is live, over ``--seconds``:

- app CPU: % of one core (process CPU time / wall time);
- RSS: this process's resident memory at the end;
- frame p95: the window's frame (``MainWindow.tick``: views, map, charts) when data changed,
  wall time, and the GUI thread's CPU time in it (``time.thread_time``: what the frame costs,
  without the waits for a core that a loaded machine adds);
- value delay: app receive time minus the node's own measurement stamp (``NodeSummary.wall_s``
  through the relay, ``SampleMsg.sample.wall_s`` directly), p95 — it includes the relay's
  1 s tick, so it is what a person sees, not the wire alone;
- detail: opening one node's card (``follow`` through the relay) until its first full sample.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/scale.py [--relayed 1000] [--direct 100] [--seconds 30]

Budgets (issue #15): relayed app <= 25 % of a core, <= 500 MiB, frame p95 <= 30 ms, value <= 2 s,
detail <= 300 ms.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[18] if len(xs) >= 20 else (max(xs) if xs else float("nan"))


def _pump(app, cond, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app.processEvents()
        if cond():
            return True
        time.sleep(0.01)
    return False


def run(app, addresses, expect: int, seconds: float, relayed: bool, detail_node: str,
        profile: str = "", parts: bool = False, gc_pace: bool = True) -> dict[str, float]:
    from PySide6.QtCore import QSettings

    from agentd.protocol.messages import SampleMsg
    from gui.main_window import MainWindow
    from gui.sources.live import LiveSource

    tmp = tempfile.mkdtemp(prefix="fleetdeck-scale-")
    settings = QSettings(str(Path(tmp) / "s.ini"), QSettings.Format.IniFormat)
    settings.setValue("ui/failure_popups", False)
    source = LiveSource(addresses)
    w = MainWindow(source, settings, confirm=lambda *a: True)
    if gc_pace:  # as the app's main does (gui/gcpace.py)
        from gui.gcpace import GcPacer
        w.gc_pacer = GcPacer()
        w.gc_pacer.install()
    w.resize(1920, 1080)
    w.show()
    delays: list[float] = []
    measuring = [False]

    def on_summaries(batch) -> None:
        if measuring[0]:
            now = time.time()
            delays.extend(now - s.wall_s for s in batch if s.wall_s)

    def on_message(_key, msg) -> None:
        if measuring[0] and isinstance(msg, SampleMsg):
            delays.append(time.time() - msg.sample.wall_s)

    source.summaries.connect(on_summaries)
    source.message.connect(on_message)
    frames: list[float] = []
    frames_cpu: list[float] = []
    prof = None
    if profile:  # the frames only (not the startup, not the network thread)
        import cProfile
        prof = cProfile.Profile()
    tick = w.tick
    last_rev = [-1]

    def timed_tick() -> None:
        changed = w.state.revision != last_rev[0]
        last_rev[0] = w.state.revision
        t0, c0 = time.perf_counter(), time.thread_time()
        if prof is not None and measuring[0]:
            prof.runcall(tick)
        else:
            tick()
        if measuring[0] and changed:  # a frame with new data to show
            frames.append((time.perf_counter() - t0) * 1000)
            frames_cpu.append((time.thread_time() - c0) * 1000)

    # --parts: the GUI thread's CPU time of each part of a frame, to say which part makes the p95.
    part_ms: dict[str, list[float]] = {}

    def timed_part(name: str, fn):
        def wrapper(*a, **k):
            c0 = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                if measuring[0]:
                    part_ms.setdefault(name, []).append((time.thread_time() - c0) * 1000)
        return wrapper

    gc_start = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_start[0] = time.thread_time()
        elif measuring[0]:
            part_ms.setdefault(f"gc generation {info['generation']}", []).append((time.thread_time() - gc_start[0]) * 1000)

    if parts:
        import gc
        gc.callbacks.append(on_gc)
        w.refresh_views = timed_part("views (tree, map, table when not split, ...)", w.refresh_views)
        w.map.refresh = timed_part("  of which: map", w.map.refresh)
        w.map.canvas._relayout = timed_part("  of which: map layout", w.map.canvas._relayout)
        w.map.canvas.render = timed_part("  of which: map render", w.map.canvas.render)
        w.jobs.refresh = timed_part("jobs table (its own frame or in views)", w.jobs.refresh)
        for c in w.charts.charts:
            label = f"chart recompute: {c.chart_metric.scope} {c.chart_metric.name}"
            c._recompute = timed_part(label, c._recompute)
    w.timer.timeout.disconnect()
    w.timer.timeout.connect(timed_tick)
    source.start()
    w.timer.start()
    ok = _pump(app, lambda: sum(1 for n in w.state.nodes.values() if n.link == "live" and n.derived is not None) >= expect, 300)
    if not ok:
        live = sum(1 for n in w.state.nodes.values() if n.link == "live")
        raise SystemExit(f"only {live} of {expect} nodes live after 300 s")
    w.show_view("map", chosen=True)
    _pump(app, lambda: False, 3)
    measuring[0] = True
    revs0 = (w.state.nodes_revision, w.state.structure_revision, w.state.revision)
    cpu0, t0 = _cpu_s(), time.monotonic()
    _pump(app, lambda: False, seconds)
    cpu = 100 * (_cpu_s() - cpu0) / (time.monotonic() - t0)
    measuring[0] = False
    if prof is not None:
        prof.dump_stats(profile)
    if parts:
        import collections
        import gc
        objs = gc.get_objects()
        top = collections.Counter(type(o).__qualname__ for o in objs).most_common(12)
        sized = sorted(((len(o), type(o).__qualname__) for o in objs if isinstance(o, (list, dict, tuple, set, collections.deque))),
                       reverse=True)
        print(f"  biggest containers: {sized[:15]}; sum of sizes {sum(n for n, _ in sized):,}", file=sys.stderr)
        print(f"  gc-tracked objects: {len(objs):,}; most: {top}", file=sys.stderr)
        del objs
        c0 = time.thread_time()
        found = gc.collect()
        print(f"  a full collection now: {(time.thread_time() - c0) * 1000:.1f} ms, {found} unreachable; "
              f"stats {gc.get_stats()}", file=sys.stderr)
        d = [b - a for a, b in zip(revs0, (w.state.nodes_revision, w.state.structure_revision, w.state.revision))]
        print(f"  revisions moved while measuring: nodes {d[0]}, structure {d[1]}, any {d[2]}", file=sys.stderr)
    if parts and frames:
        print(f"  frames with new data: {len(frames)}, over 30 ms wall: {sum(f > 30 for f in frames)}, "
              f"max {max(frames):.1f} ms wall / {max(frames_cpu):.1f} ms CPU", file=sys.stderr)
    for name, xs in sorted(part_ms.items()):
        xs.sort()
        print(f"  part {name}: {len(xs)} calls, CPU ms p50 {xs[len(xs) // 2]:.1f}, p95 {_p95(xs):.1f}, max {xs[-1]:.1f}",
              file=sys.stderr)
    detail_ms = float("nan")
    if relayed:
        node = w.state.nodes[detail_node]
        t1 = time.perf_counter()
        w.show_node_card(detail_node)
        if _pump(app, lambda: node.last_sample is not None, 10):
            detail_ms = (time.perf_counter() - t1) * 1000
    out = {"nodes": len(w.state.nodes), "cpu_pct": cpu, "rss_mib": _rss_mib(), "frame_p95_ms": _p95(frames),
           "frame_cpu_p95_ms": _p95(frames_cpu), "load1": os.getloadavg()[0],
           "delay_p95_s": _p95(delays), "detail_ms": detail_ms}
    if w.gc_pacer is not None:
        w.gc_pacer.uninstall()
    w.timer.stop()
    source.stop()
    w.close()
    w.deleteLater()
    app.processEvents()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--relayed", type=int, default=1000)
    p.add_argument("--direct", type=int, default=100)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--profile", default="", help="write a cProfile of the relayed run's frames to this file")
    p.add_argument("--python-gc", action="store_true",
                   help="leave full collections to Python (without the app's GcPacer, as before it)")
    p.add_argument("--parts", action="store_true", help="print each frame part's CPU time (p50/p95/max) to stderr")
    args = p.parse_args()

    from PySide6.QtWidgets import QApplication

    from agentd.clusterfile import load_cluster
    from gui.sources.base import NodeAddress
    from tests.relay.relay_helpers import relay, sim_fleet, wait_nodes

    app = QApplication.instance() or QApplication([])
    rows = []
    with tempfile.TemporaryDirectory(prefix="fleetdeck-scale-") as d:
        tmp = Path(d)
        if args.relayed:
            with sim_fleet(tmp, args.relayed, prefix="sim", extra=["--gpus", str(args.gpus)]) as cluster, \
                    relay(tmp, cluster) as r:
                wait_nodes(r, args.relayed + 1, timeout_s=300)
                res = run(app, [NodeAddress(key=r.node, endpoint=r.ctl)], args.relayed + 1, args.seconds, True, "sim-0007",
                          args.profile, args.parts, not args.python_gc)
                rows.append((f"{args.relayed} simulated nodes through 1 relay (1 stream)", res))
        if args.direct:
            with sim_fleet(tmp, args.direct, prefix="dsim", extra=["--gpus", str(args.gpus)]) as cluster:
                addrs = [NodeAddress(key=n.name, endpoint=n.endpoint) for n in load_cluster(cluster).node]
                res = run(app, addrs, args.direct, args.seconds, False, "", parts=args.parts, gc_pace=not args.python_gc)
                rows.append((f"{args.direct} simulated nodes followed directly ({args.direct} streams)", res))
    print(f"| setup ({args.gpus} GPUs/node, {args.seconds:g} s) | nodes in app | app CPU (% core) | RSS (MiB) "
          "| frame p95 (ms) | frame CPU p95 (ms) | value delay p95 (s) | open detail (ms) | load avg |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        detail = "—" if r["detail_ms"] != r["detail_ms"] else f"{r['detail_ms']:.0f}"
        print(f"| {name} | {r['nodes']} | {r['cpu_pct']:.1f} | {r['rss_mib']:.0f} | {r['frame_p95_ms']:.1f} "
              f"| {r['frame_cpu_p95_ms']:.1f} | {r['delay_p95_s']:.2f} | {detail} | {r['load1']:.1f} |")


if __name__ == "__main__":
    main()
