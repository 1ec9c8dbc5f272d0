"""``fleetdeck``: the desktop app.

    fleetdeck                       follow the local agentd (offers to start one if none answers)
    fleetdeck --cluster FILE        follow every [[node]] of a cluster file
    fleetdeck --node tcp://H:7710   follow one node (repeatable)
    fleetdeck --demo 3              start 3 local daemons with simulated GPUs and example jobs
    fleetdeck --replay FILE         replay a recording
    fleetdeck --screenshot out.png --after 5   render the window after 5 s and exit
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QSettings, Qt, QTimer, Signal
from PySide6.QtWidgets import QApplication, QMessageBox

from agentd.clusterfile import load_cluster as load_cluster_file
from gui.cluster_file import ClusterFileError, load_cluster
from gui.gcpace import GcPacer
from gui.sources.base import DataSource, NodeAddress

if TYPE_CHECKING:
    from gui.main_window import MainWindow

log = logging.getLogger("fleetdeck")

LOCAL_CTL = "tcp://127.0.0.1:7710"
LOCAL_PUB = "tcp://127.0.0.1:7711"
LOCAL_PROBE_S = 1.0
ORG, APP = "fleetdeck", "fleetdeck"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fleetdeck", description="Desktop control room for GPU/CPU clusters running AI work.")
    p.add_argument("--cluster", type=Path, help="TOML cluster file with [[node]] tables (name, endpoint, server_key, labels)")
    p.add_argument("--node", action="append", default=[], metavar="ENDPOINT", help="follow the agentd at ENDPOINT (repeatable)")
    p.add_argument("--no-local", action="store_true", help="do not connect to (or start) the local agentd")
    p.add_argument("--yes", action="store_true", help="start a local agentd without asking when none answers")
    p.add_argument("--demo", type=int, metavar="N", help="start N local agentd with simulated GPUs and example jobs")
    p.add_argument("--prometheus", metavar="URL",
                   help="a Prometheus scraping the nodes: chart spans past 1 h come from it (or prometheus = URL in the cluster file)")
    p.add_argument("--replay", type=Path, metavar="FILE", help="replay a recording")
    p.add_argument("--screenshot", type=Path, metavar="PATH", help="save the main window as PNG and exit")
    p.add_argument("--after", type=float, default=3.0, metavar="S", help="seconds to wait before --screenshot (default 3)")
    p.add_argument("--theme", choices=("system", "light", "dark"),
                   help="colours: follow the system, or light or dark; remembered for the next start")
    p.add_argument("--settings-dir", type=Path, help=argparse.SUPPRESS)  # tests: keep QSettings away from $HOME
    args = p.parse_args(argv)
    if args.demo is not None and not 1 <= args.demo <= 16:
        p.error(f"--demo {args.demo}: choose between 1 and 16 daemons")
    if args.after < 0:
        p.error("--after must be 0 or more seconds")
    return args


class _Bridge(QObject):
    """Carries results of background threads to the GUI thread (queued signals)."""

    node_ready = Signal(object)
    problem = Signal(str)
    notice = Signal(str)
    busy = Signal(str)
    local_missing = Signal()


def make_settings(settings_dir: Path | None) -> QSettings:
    if settings_dir is not None:
        settings_dir.mkdir(parents=True, exist_ok=True)
        return QSettings(str(settings_dir / "fleetdeck.ini"), QSettings.Format.IniFormat)
    return QSettings(ORG, APP)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.replay is not None:
        # A file that cannot be replayed is one line and exit status 2, never a traceback.
        from gui.replay_mode import RecordingError, check_replayable
        try:
            check_replayable(args.replay)
        except RecordingError as exc:
            print(f"fleetdeck: {exc}", file=sys.stderr)
            return 2
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Fleetdeck")
    app.setOrganizationName(ORG)
    settings = make_settings(args.settings_dir)
    from gui.views.theme_setting import apply_theme, load_theme, save_theme
    if args.theme is not None:
        save_theme(settings, args.theme)
    apply_theme(app, load_theme(settings))

    from gui.local_agents import LocalAgents, demo_workloads, submit
    from gui.sources.live import LiveSource

    agents = LocalAgents()
    bridge = _Bridge()
    addresses: list[NodeAddress] = []
    prometheus: str = args.prometheus or ""
    if args.replay is not None:
        from gui.replay_mode import replay_title
        from gui.sources.replay import ReplaySource
        source = ReplaySource(args.replay)  # checked above, before any window
        label = replay_title(args.replay)
    else:
        if args.cluster is not None:
            try:
                addresses += load_cluster(args.cluster)
                prometheus = prometheus or load_cluster_file(args.cluster).prometheus
            except ClusterFileError as exc:
                print(f"fleetdeck: {exc}", file=sys.stderr)
                return 2
        addresses += [NodeAddress(key=ep, endpoint=ep) for ep in args.node]
        label = "demo / simulated" if args.demo else "live"
        source = LiveSource([], label=label)

    window = assemble_window(source, settings, title_label=label)
    if prometheus:
        from gui.sources.history_fetch import HistoryFetcher
        from gui.sources.prom_history import HistoryError

        try:
            window.charts.set_history(HistoryFetcher(prometheus, parent=window))
        except HistoryError as exc:
            print(f"fleetdeck: {exc}", file=sys.stderr)
            return 2
    bridge.node_ready.connect(window.add_node)
    bridge.problem.connect(lambda m: (window.state.add_local_event(m, ok=False, kind="error"), window._show_failure(m)))
    bridge.notice.connect(lambda m: (window.state.add_local_event(m, kind="app"), window.status.showMessage(m, 10000)))
    bridge.busy.connect(window.status.set_busy)

    if args.replay is None:
        if not args.demo and not addresses:
            addresses += window.remembered_nodes()
        for a in addresses:
            window.add_node(a)
        if args.demo:
            threading.Thread(target=_run_demo, args=(agents, args.demo, bridge, demo_workloads, submit), daemon=True,
                             name="fleetdeck-demo").start()
        elif not args.no_local and not any(a.endpoint == LOCAL_CTL for a in addresses):
            _probe_local(bridge, args.yes, window, agents)

    # Full garbage collections between frames, not inside them (~80 ms at 1,000 nodes).
    window.gc_pacer = GcPacer()
    window.gc_pacer.install()
    window.start()
    window.show()
    _install_signal_handlers(app)
    if args.screenshot is not None:
        def shoot() -> None:
            window.refresh_views()
            window.charts.redraw(source.now_s())
            ok = window.grab().save(str(args.screenshot))
            if not ok:
                print(f"fleetdeck: could not write screenshot {args.screenshot}", file=sys.stderr)
            window.close()
        QTimer.singleShot(int(args.after * 1000), shoot)
    app.aboutToQuit.connect(window.shutdown)
    try:
        rc = app.exec()
    finally:
        window.shutdown()
        window.gc_pacer.uninstall()  # Python's own collector again (main runs inside tests too)
        agents.stop_all()
    return rc


def assemble_window(source: DataSource, settings: QSettings, *, title_label: str | None = None,
                    confirm=None) -> MainWindow:
    """The main window on ``source``, live or replay: a replay gets its timeline, and every
    window opens recordings (File ▸ Open recording…) in new windows assembled here too, so
    gui.main_window and gui.replay_mode never import each other."""
    from gui.main_window import MainWindow
    from gui.sources.replay import ReplaySource

    window = MainWindow(source, settings, title_label=title_label, confirm=confirm,
                        open_replay=lambda path: open_replay_window(path, settings))
    if isinstance(source, ReplaySource):
        from gui.views.timeline import Timeline
        window.set_timeline(Timeline(source))
    return window


def open_replay_window(path: str | Path, settings: QSettings, confirm=None) -> MainWindow:
    """A started, shown window replaying ``path``; RecordingError (its message names the file
    and the remedy) for a file that cannot be replayed, before any window opens."""
    from gui.replay_mode import check_replayable, replay_title
    from gui.sources.replay import ReplaySource

    check_replayable(path)
    window = assemble_window(ReplaySource(path), settings, title_label=replay_title(path), confirm=confirm)
    window.start()
    window.show()
    return window


def _run_demo(agents, n: int, bridge: _Bridge, workloads, submit) -> None:
    """Background thread: start N daemons, wait for them, submit the examples."""
    try:
        bridge.busy.emit(f"Starting {n} demo daemons…")
        started = [agents.start(f"sim-{i + 1}", simulate_gpus=4, cancel_jobs_on_stop=True) for i in range(n)]
        # agentctl --cluster FILE reaches the demo: the file names its daemons (removed on quit).
        cluster_file = agents.write_cluster_file(Path.cwd())
        print(f"fleetdeck demo: cluster file {cluster_file}; try: agentctl --cluster {cluster_file} nodes",
              file=sys.stderr, flush=True)
        bridge.notice.emit(f"Demo cluster file: {cluster_file} (agentctl --cluster {cluster_file.name} ...)")
        told = False
        for i, a in enumerate(started):
            agents.wait_ready(a)
            # agentctl works against the demo too: tell where each daemon listens.
            print(f"fleetdeck demo: node {a.name} at {a.ctl} (state {a.state_dir})", file=sys.stderr, flush=True)
            bridge.node_ready.emit(a.address())
            specs = workloads(i)
            if not specs and not told:
                told = True
                bridge.notice.emit("examples/trainer.py and examples/agent_sim.py are missing; the demo runs without jobs")
            for p in submit(a, specs):
                bridge.problem.emit(p)
        from gui.local_agents import demo_groups, run_group_submits

        for p in run_group_submits(demo_groups(cluster_file, [a.name for a in started])):
            bridge.problem.emit(p)
    except Exception as exc:  # noqa: BLE001 - a worker thread: any failure becomes a message, never a dead thread
        bridge.problem.emit(f"the demo could not start: {exc}")
    finally:
        bridge.busy.emit("")


def _probe_local(bridge: _Bridge, yes: bool, window, agents) -> None:
    """Follow the local agentd; if none answers, offer to start one for this session."""

    def probe() -> None:
        from agentd.transport.client import ClientError, NodeClient
        try:
            with NodeClient(LOCAL_CTL, timeout_s=LOCAL_PROBE_S) as c:
                c.hello()
            bridge.node_ready.emit(NodeAddress(key="local", endpoint=LOCAL_CTL))
        except ClientError:
            bridge.local_missing.emit()

    def start_local() -> None:
        def run() -> None:
            try:
                bridge.busy.emit("Starting a local agentd…")
                a = agents.start("local", ctl=LOCAL_CTL, pub=LOCAL_PUB)
                agents.wait_ready(a)
                bridge.node_ready.emit(NodeAddress(key="local", endpoint=LOCAL_CTL))
            except Exception as exc:  # noqa: BLE001 - a worker thread: any failure becomes a message
                bridge.problem.emit(f"could not start a local agentd: {exc}")
            finally:
                bridge.busy.emit("")
        threading.Thread(target=run, daemon=True, name="fleetdeck-local").start()

    def missing() -> None:
        if yes:
            start_local()
            return
        box = QMessageBox(QMessageBox.Icon.Question, "No local agentd",
                          f"No agentd answers at {LOCAL_CTL}.\nStart one for this session? It stops when Fleetdeck quits.",
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, window)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.finished.connect(lambda r: start_local() if r == QMessageBox.StandardButton.Yes else None)
        box.open()

    bridge.local_missing.connect(missing)
    threading.Thread(target=probe, daemon=True, name="fleetdeck-probe").start()


def _install_signal_handlers(app: QApplication) -> None:
    """SIGINT/SIGTERM quit cleanly, so daemons we started are stopped by pid."""
    def quit_(*_):
        QTimer.singleShot(0, app.quit)
    signal.signal(signal.SIGINT, quit_)
    signal.signal(signal.SIGTERM, quit_)
    # Let the interpreter run now and then, or Python signal handlers never fire under Qt.
    timer = QTimer(app)
    timer.timeout.connect(lambda: None)
    timer.start(250)


if __name__ == "__main__":
    sys.exit(main())
