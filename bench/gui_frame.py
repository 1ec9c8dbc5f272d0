"""Frame-time benchmark of the app's redraw paths.

64 simulated nodes x 8 GPUs with 1 h of history at 1 s. Measures the median and p95 of a full
redraw (data to pixels: ring buffer read, window, min/max decimation, setData, paint) of
  (a) one chart with 64 curves x 3600 points,
  (b) one chart with 256 curves,
  (c) the topology canvas with 512 GPU tiles,
beside a plain pyqtgraph PlotWidget fed the same full arrays, and the app's idle CPU with all
views open. Prints a markdown table.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/gui_frame.py [--frames 60]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSettings
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QApplication

from agentd.metrics.samples import (
    CpuTimes,
    GpuInfo,
    GpuLink,
    GpuSample,
    HostSample,
    NodeInventory,
    NodeSample,
)
from agentd.protocol.jobs import JobInfo, JobSpec
from agentd.protocol.messages import SnapshotReply
from gui.series import NodeSeries
from gui.sources.base import Capabilities, DataSource
from gui.state import ClusterState, gpu_scope

NODES, GPUS, HISTORY = 64, 8, 3600
BUDGET_MS = {"a": 20.0, "b": 50.0, "c": 20.0}
IDLE_BUDGET_PCT = 5.0
GiB = 1024**3


def build_state(now: float) -> ClusterState:
    """A cluster whose rings are full: filled directly, as 3600 derive() calls per node would
    only measure derive."""
    st = ClusterState(clock=lambda: now)
    rng = np.random.default_rng(7)
    t = now - HISTORY + np.arange(HISTORY, dtype=np.float64)
    for n in range(NODES):
        key = f"node-{n:02d}"
        inv = NodeInventory(node=key, hostname=key, gpu_backend="simulated",
                            gpus=[GpuInfo(index=i, name="Sim H100", uuid=f"{key}-{i}", mem_total_bytes=80 * GiB) for i in range(GPUS)],
                            gpu_links=[GpuLink(a=i, b=i + 1, kind="nvlink", links=4) for i in range(0, GPUS - 1, 2)])
        samples = [NodeSample(node=key, mono_s=float(k), wall_s=now - 1 + k, boot_id="b",
                              host=HostSample(cpu_total=CpuTimes(user_s=10.0 * k, idle_s=30.0 * k), mem_total_bytes=512 * GiB, mem_used_bytes=100 * GiB),
                              gpus=[GpuSample(index=i, sm_util_pct=float(rng.uniform(0, 100)), mem_used_bytes=40 * GiB, mem_total_bytes=80 * GiB,
                                              power_mw=400_000, temp_c=60.0) for i in range(GPUS)]) for k in range(2)]
        jobs = [JobInfo(id=f"{key}.{j}", node=key, name=f"train-{n}-{j}", state="paused" if j == 1 else "running",
                        spec=JobSpec(argv=["x"]), gpus=[2 * j, 2 * j + 1]) for j in range(3)]
        st.apply_snapshot(key, SnapshotReply(seq=1, inventory=inv, samples=samples, jobs=jobs))
        st.set_link(key, "live")
        ns = NodeSeries(HISTORY)
        ns.times[:] = t
        walk = lambda: np.clip(50 + np.cumsum(rng.normal(0, 2, HISTORY)), 0, 100).astype(np.float32)  # noqa: E731
        ns.values[("", "cpu_pct")] = walk()
        for i in range(GPUS):
            ns.values[(gpu_scope(i), "sm_util_pct")] = walk()
            ns.values[(gpu_scope(i), "mem_used_pct")] = walk()
        ns.count, ns.head = HISTORY, 0
        st.series.nodes[key] = ns
    return st


class IdleSource(DataSource):
    """A source with nothing to say: the idle-CPU measurement."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def nodes(self) -> list[str]: return []
    def now_s(self) -> float: return time.time()
    def capabilities(self) -> Capabilities: return Capabilities(can_control=False, label="bench")
    def request(self, key, req) -> int: return 0


def timed(fn, frames: int, prepare=None) -> tuple[float, float]:
    """Median and p95 ms of ``fn``; ``prepare`` (new data, untimed) runs before each frame."""
    if prepare:
        prepare()
    fn()  # warm-up
    times = []
    for _ in range(frames):
        if prepare:
            prepare()
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--idle-s", type=float, default=10.0)
    args = ap.parse_args()
    app = QApplication.instance() or QApplication([])
    from gui.views.charts import ChartsPanel
    from gui.views.topology import TopologyCanvas

    now = time.time()
    st = build_state(now)
    rows = []

    def chart_case(metric, scope, n_curves, label, budget):
        # The chart inside its panel, as in the app.
        panel = ChartsPanel(st)
        panel.restore([{"metric": list(metric), "scope": scope, "span": "1 h"}])
        panel.resize(900, 460)
        panel.show()
        chart = panel.charts[0]
        app.processEvents()
        assert len(chart.series_keys()) == n_curves, (len(chart.series_keys()), n_curves)

        img = QImage(chart.plot.size(), QImage.Format.Format_ARGB32_Premultiplied)

        def paint(widget):
            # Render into an image: a real paint of every item, whether or not the offscreen
            # platform considers the window exposed.
            p = QPainter(img)
            widget.render(p)
            p.end()

        def frame():
            st.revision += 1  # new data arrived
            chart.redraw(now, force=True)
            paint(chart.plot)
        med, p95 = timed(frame, args.frames)
        # the same arrays into a plain PlotWidget, full resolution, default settings
        plain = pg.PlotWidget()
        plain.resize(chart.plot.size())
        plain.show()
        keys = chart.series_keys()
        items = [plain.plot(pen=pg.mkPen(i % 16)) for i in range(len(keys))]

        def plain_frame():
            for item, k in zip(items, keys):
                t, v = st.series.get(k)
                item.setData(t, v)
            paint(plain)
        pmed, pp95 = timed(plain_frame, max(5, args.frames // 4))
        rows.append((label, med, p95, budget, pmed, pp95))
        panel.close()
        plain.close()

    chart_case(("node", "cpu_pct"), "*", NODES, "(a) chart, 64 curves x 3600 pts", BUDGET_MS["a"])
    chart_case(("gpu", "sm_util_pct"), "*", min(256, NODES * GPUS), "(b) chart, 256 curves x 3600 pts", BUDGET_MS["b"])

    canvas = TopologyCanvas(st)
    canvas.resize(1400, 900)
    canvas.show()
    canvas.refresh()
    canvas.fit()
    app.processEvents()
    tiles = sum(c.n_gpus for c in canvas.cards.values())

    timg = QImage(canvas.size(), QImage.Format.Format_ARGB32_Premultiplied)
    nodes = list(st.nodes.values())
    util_rng = np.random.default_rng(11)

    def new_samples():
        # Worst case: every node has a new sample (new utilisation on every GPU) every frame,
        # so every card repaints; the app sees about one node in ten change per 100 ms frame.
        # Making the structs is the data source's work, not the frame's: untimed.
        for node in nodes:
            d = node.derived
            node.derived = msgspec.structs.replace(d, gpus=[msgspec.structs.replace(g, sm_util_pct=float(u))
                                                            for g, u in zip(d.gpus, util_rng.uniform(0, 100, len(d.gpus)))])
        st.revision += 1

    def topo_frame():
        canvas.refresh()
        p = QPainter(timg)
        canvas.render(p)
        p.end()
    med, p95 = timed(topo_frame, args.frames, new_samples)
    rows.append((f"(c) topology, {tiles} GPU tiles, whole cluster in view", med, p95, BUDGET_MS["c"], None, None))
    canvas.resetTransform()  # 1:1, every tile's text drawn (the tiles in view)
    app.processEvents()
    med, p95 = timed(topo_frame, args.frames, new_samples)
    rows.append(("(c') topology at 100 % zoom (text on every tile in view)", med, p95, BUDGET_MS["c"], None, None))
    canvas.close()

    import tempfile

    from gui.main_window import MainWindow
    with tempfile.TemporaryDirectory() as d:
        w = MainWindow(IdleSource(), QSettings(os.path.join(d, "s.ini"), QSettings.Format.IniFormat), state=st)
        w.show()
        w.start()
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end:  # settle: first draws of every view
            app.processEvents()
            time.sleep(0.005)
        c0, w0 = time.process_time(), time.monotonic()
        while time.monotonic() - w0 < args.idle_s:
            app.processEvents()
            time.sleep(0.005)
        idle = 100 * (time.process_time() - c0) / (time.monotonic() - w0)
        w.shutdown()
        w.close()

    ok = True
    print("| case | fleetdeck median ms | fleetdeck p95 ms | budget p95 ms | plain PlotWidget median ms | plain p95 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, med, p95, budget, pmed, pp95 in rows:
        ok &= p95 <= budget
        plain = ("—", "—") if pmed is None else (f"{pmed:.1f}", f"{pp95:.1f}")
        print(f"| {label} | {med:.1f} | {p95:.1f} | {budget:.0f} {'✓' if p95 <= budget else '✗'} | {plain[0]} | {plain[1]} |")
    ok &= idle <= IDLE_BUDGET_PCT
    print(f"| idle CPU, all views open, 64 nodes | {idle:.1f}% | | {IDLE_BUDGET_PCT:.0f}% {'✓' if idle <= IDLE_BUDGET_PCT else '✗'} | | |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
