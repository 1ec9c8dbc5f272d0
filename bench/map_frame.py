"""Frame time of the cluster map (gui/views/clustermap.py) on a SIMULATED cluster.

16, 256 and 1,000 nodes x 8 GPUs (gui/sim_cluster.py: synthetic samples through the real
derive(), racks of 32, jobs, a few stale and down nodes). A frame is what the window does when
new data arrived: every tile's value and colour, the image, and the paint with its text. The map
is in a 1,400 x 800 window (the middle of a 1920x1080 screen with the side docks open); each
frame changes the GPU values so nothing is served from a cache. Prints a markdown table.
Budget: p95 <= 30 ms at 1,000 nodes x 8 GPUs.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/map_frame.py [--frames 60] [--sizes 16 256 1000 10000]
    .venv/bin/python bench/map_frame.py --show 1000      # a window on a SIMULATED cluster (screenshots)
    .venv/bin/python bench/map_frame.py --show 64 --group grpo-async   # ... with a group selected, its charts open
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BUDGET_MS = 30.0
SIZES = (16, 256, 1000)


def _jiggle(state, k: int, every: int = 1) -> None:
    """New GPU values on every node (``every`` > 1: on one node in ``every``, as one summary
    phase of a big relay brings), as a stream of samples would bring (untimed)."""
    import msgspec

    for i, node in enumerate(state.nodes.values()):
        d = node.derived
        if d is None or (i + k) % every:
            continue
        gpus = [msgspec.structs.replace(g, sm_util_pct=float((i * 7 + g.index * 13 + k * 5) % 101)) for g in d.gpus]
        node.derived = msgspec.structs.replace(d, gpus=gpus)
    state.revision += 1


def bench(frames: int, sizes: tuple[int, ...] = SIZES, every: int = 1, paced: bool = False) -> list[tuple[int, float, float, int]]:
    from PySide6.QtWidgets import QApplication

    from gui.gcpace import GcPacer
    from gui.sim_cluster import simulated_state
    from gui.views.clustermap import ClusterMap

    app = QApplication.instance() or QApplication([])
    out = []
    for n in sizes:
        state = simulated_state(n, gpus=8)
        m = ClusterMap(state)
        m.resize(1400, 800)
        m.show()
        app.processEvents()
        m.refresh()
        app.processEvents()
        times = []
        pacer = GcPacer()
        if paced:
            pacer.install()  # as the app's main() does (gui/gcpace.py)
        for k in range(frames + 1):
            _jiggle(state, k, every)
            t0 = time.perf_counter()
            m.refresh()
            m.canvas.repaint()  # paint now, not when the event loop gets to it
            times.append((time.perf_counter() - t0) * 1000)
            pacer.tick()
        pacer.uninstall()
        times = sorted(times[1:])  # the first frame warms caches
        out.append((n, statistics.median(times), times[int(0.95 * (len(times) - 1))], m.canvas.layout_.geo.tile))
        m.close()
    return out


def bench_band(frames: int, nodes: int = 1000, gpus: int = 8, points: int = 900) -> tuple[float, float]:
    """An "all GPUs" chart of ``nodes`` x ``gpus`` over 15 min at 1 s: the quantile band and
    the top-k lines instead of 8,000 curves. Returns (p50, p95) ms of a full redraw."""
    import numpy as np
    from PySide6.QtWidgets import QApplication

    from gui.series import NodeSeries
    from gui.sim_cluster import START_WALL_S, simulated_state
    from gui.state import gpu_scope
    from gui.views.charts import Chart

    app = QApplication.instance() or QApplication([])
    state = simulated_state(nodes, gpus=gpus)
    now = START_WALL_S + 2.0
    rng = np.random.default_rng(1)
    for key in state.nodes:
        ns = NodeSeries(points)
        ns.times[:] = now - points + np.arange(points)
        for i in range(gpus):
            ns.values[(gpu_scope(i), "sm_util_pct")] = np.clip(50 + np.cumsum(rng.normal(0, 2, points)), 0, 100).astype(np.float32)
        ns.count, ns.head = points, 0
        state.series.nodes[key] = ns
    chart = Chart(state, ("gpu", "sm_util_pct"), "*", "15 min")
    chart.resize(700, 320)
    chart.show()
    app.processEvents()
    times = []
    for _ in range(frames + 1):
        t0 = time.perf_counter()
        chart.redraw(now, force=True)
        chart.plot.repaint()
        times.append((time.perf_counter() - t0) * 1000)
    times = sorted(times[1:])
    assert len(chart.curves) <= 9, "the band, not one line per GPU"
    chart.close()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def show(n: int, group: str = "") -> int:
    """A main window on a SIMULATED cluster of ``n`` nodes (no daemons), for screenshots;
    ``group`` (a group's name or id): selected in the jobs table, outlined on the map, its charts open."""
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from gui.main_window import MainWindow
    from gui.sim_cluster import START_WALL_S, simulated_state
    from gui.sources.base import Capabilities, DataSource

    class Still(DataSource):
        """Nothing arrives: the state is what sim_cluster made."""

        def start(self) -> None: ...
        def stop(self) -> None: ...
        def nodes(self) -> list[str]: return []
        def now_s(self) -> float: return START_WALL_S + 2.0  # the simulated samples' time
        def capabilities(self) -> Capabilities: return Capabilities(can_control=False, label="SIMULATED")
        def request(self, key, req) -> int: return 0

    app = QApplication.instance() or QApplication([])
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"fleetdeck-map-show-{os.getpid()}.ini"
    settings = QSettings(str(tmp), QSettings.Format.IniFormat)
    w = MainWindow(Still(), settings, state=simulated_state(n, gpus=8),
                   title_label=f"SIMULATED cluster of {n:,} nodes (synthetic state, no daemons)")
    w.start()
    if group:
        from gui.groups import group_ids
        from gui.models.jobs import JOB_ID_ROLE

        gid = next((g for g, (name, _roles) in group_ids(w.state.nodes).items() if group in (g, name)), None)
        if gid is None:
            print(f"map_frame: no group {group!r} in the simulated cluster of {n} nodes (groups need 10 nodes or more)", file=sys.stderr)
            return 2
        for c in list(w.charts.charts):
            w.charts.remove_chart(c)
        w.charts.add_group_charts(gid)
        w.refresh_views()
        w.jobs.select([gid])
        proxy = w.jobs.proxy
        top = next(proxy.index(r, 0) for r in range(proxy.rowCount()) if proxy.index(r, 0).data(JOB_ID_ROLE) == gid)
        w.jobs.table.expand(top)
        w.jobs.table.scrollTo(top, w.jobs.table.ScrollHint.PositionAtTop)
    screen = w.screen().availableGeometry()
    w.setGeometry(screen)  # a whole screen, as maximised (Xvfb has no window manager to maximise)
    w.show()
    rc = app.exec()
    tmp.unlink(missing_ok=True)
    return rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="cluster sizes (nodes of 8 GPUs)")
    ap.add_argument("--no-band", action="store_true", help="skip the 'all GPUs' chart")
    ap.add_argument("--changed-every", type=int, default=1, metavar="K",
                    help="new values on one node in K per frame (10: one summary phase of a big relay)")
    ap.add_argument("--paced-gc", action="store_true", help="pace the cycle collector as the app does (gui/gcpace.py)")
    ap.add_argument("--show", type=int, metavar="N", help="open a window on a SIMULATED cluster of N nodes instead")
    ap.add_argument("--group", default="", metavar="NAME", help="with --show: select this group, open its charts")
    args = ap.parse_args()
    if args.show:
        return show(args.show, args.group)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    rows = bench(args.frames, tuple(args.sizes), args.changed_every, args.paced_gc)
    print("| nodes x GPUs | tile px | frame p50 ms | frame p95 ms | budget |")
    print("|---|---|---|---|---|")
    ok = True
    for n, p50, p95, tile in rows:
        budget = f"p95 <= {BUDGET_MS:.0f} ms" if n == 1000 else ""
        ok &= n != 1000 or p95 <= BUDGET_MS
        print(f"| {n:,} x 8 | {tile} | {p50:.1f} | {p95:.1f} | {budget} |")
    if args.no_band:
        return 0 if ok else 1
    p50, p95 = bench_band(max(10, args.frames // 3))
    print(f"\n\"All GPUs\" chart of 1,000 x 8 GPUs, 15 min at 1 s (quantile band + top 5): p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
