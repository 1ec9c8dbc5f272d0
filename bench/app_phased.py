"""The app's GUI thread at 10,000 SIMULATED nodes taken in summary phases, without the relays.

The real two-level run (10 simulators and child relays of 1,000 nodes under a top relay) needs
about 3.5 cores; this VM has 2. What the app does with such a relay is known, though: it takes
``summary_phases(N)`` of the relay's 10 phases (docs/relays.md), so each second it receives
``SUMMARY_BATCH``-node batches of about N * phases / 10 nodes, each node's summary every
10 / phases seconds. Here a feed hands the real MainWindow exactly that, through the
DataSource's ``summaries`` signal (as LiveSource does after decoding), with every value moving:
the whole window runs (map shown, default charts, tree, jobs table, status bar, GC paced as in
``main``) and this process's CPU time is measured over ``--seconds``. Not included: decoding the
batches on the network thread (``bench/summary_cost.py``: 0.4 % of a core at this rate).

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/app_phased.py [--nodes 10000] [--seconds 30]

Budget (issue 15): the app following 10,000 nodes through two relay levels < 50 % of a core.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from agentd.protocol.relay import SUMMARY_BATCH, SUMMARY_PHASES, summary_phases
from bench.summary_cost import summary


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=10_000)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--phases", default="auto", help="summary phases taken: a number, or auto (as the app)")
    args = p.parse_args()
    phases = summary_phases(args.nodes) if args.phases == "auto" else int(args.phases)

    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from gui.gcpace import GcPacer
    from gui.main_window import MainWindow
    from gui.sources.base import Capabilities, DataSource

    t_start = time.time()
    fleet = [summary(n, t_start) for n in range(args.nodes)]
    batches = [fleet[i:i + SUMMARY_BATCH] for i in range(0, len(fleet), SUMMARY_BATCH)]

    class PhasedFeed(DataSource):
        """What LiveSource emits for a relay taken in ``phases`` phases, one tick a second."""

        def __init__(self) -> None:
            super().__init__()
            self.tick_no = 0
            self.timer = QTimer()
            self.timer.timeout.connect(self.tick)

        def start(self) -> None:
            self.summaries.emit(fleet)  # the relay's nodes reply: every node once
            self.timer.start(1000)

        def tick(self) -> None:
            self.tick_no += 1
            now = time.time()
            for i, b in enumerate(batches):
                if (i + self.tick_no) % SUMMARY_PHASES < phases:
                    self.summaries.emit([msgspec.structs.replace(
                        s, wall_s=now, cpu_pct=float((self.tick_no * 7 + j) % 100),
                        gpus=[msgspec.structs.replace(g, util_pct=float((self.tick_no + j + g.index) % 100))
                              for g in s.gpus]) for j, s in enumerate(b)])

        def stop(self) -> None:
            self.timer.stop()

        def nodes(self) -> list[str]:
            return []

        def now_s(self) -> float:
            return time.time()

        def capabilities(self) -> Capabilities:
            return Capabilities(can_control=False, label="SIMULATED")

        def request(self, key, req) -> int:
            return 0

    app = QApplication.instance() or QApplication([])
    tmp = tempfile.mkdtemp(prefix="fleetdeck-phased-")
    settings = QSettings(str(Path(tmp) / "s.ini"), QSettings.Format.IniFormat)
    settings.setValue("ui/failure_popups", False)
    source = PhasedFeed()
    w = MainWindow(source, settings, confirm=lambda *a: True,
                   title_label=f"SIMULATED feed of {args.nodes:,} nodes in {phases} summary phase(s)")
    w.gc_pacer = GcPacer()
    w.gc_pacer.install()
    w.resize(1920, 1080)
    w.show()
    w.start()
    w.show_view("map", chosen=True)
    end = time.monotonic() + 10
    while time.monotonic() < end:  # settle: the first full apply, layouts, first band
        app.processEvents()
        time.sleep(0.005)
    cpu0, t0 = _cpu_s(), time.monotonic()
    while time.monotonic() - t0 < args.seconds:
        app.processEvents()
        time.sleep(0.005)
    cpu = 100 * (_cpu_s() - cpu0) / (time.monotonic() - t0)
    fresh = sum(1 for n in w.state.nodes.values() if n.derived is not None and n.derived.wall_s > t_start)
    rate = args.nodes * phases / SUMMARY_PHASES
    print(f"| {args.nodes:,} | {phases} of {SUMMARY_PHASES} | {rate:,.0f}/s | {cpu:.1f} % | "
          f"{fresh:,} of {len(w.state.nodes):,} nodes refreshed | load {os.getloadavg()[0]:.1f} |")
    w.gc_pacer.uninstall()
    source.stop()
    w.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
