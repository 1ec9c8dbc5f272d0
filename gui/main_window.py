"""The main window: cluster tree, topology, charts, jobs, events and the status bar, all fed
by one DataSource and redrawn from one timer.

Over 500 lines: the docks, menus and settings of one window and the wiring between its
views; each view lives in gui/views and holds its own logic.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from PySide6.QtCore import QByteArray, QPoint, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QLineEdit,
    QMainWindow,
    QMenu,
    QMessageBox,
    QStackedWidget,
    QSystemTrayIcon,
    QToolBar,
    QToolButton,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from gui.actions import Actions
from gui.gcpace import GcPacer
from gui.models.cluster_tree import KEY_ROLE, ClusterTreeModel, TreeFilterProxy
from gui.sources.base import DataSource, NodeAddress
from gui.state import ClusterState
from gui.submit import Submitter, offers
from gui.views.charts import ChartsPanel
from gui.views.clustermap import ClusterMap
from gui.views.dialogs import ConnectDialog, TargetDialog
from gui.views.events import EventLog
from gui.views.health import HealthPanel
from gui.views.jobs import JobsPanel
from gui.views.logs import LogsDialog
from gui.views.recording import FILE_FILTER, RecordController
from gui.views.statusbar import StatusBar
from gui.views.submit import SubmitDialog
from gui.views.topology import TopologyCanvas

FRAME_HZ = 15
REPLAY_CONTROL_TIP = "replay: control is disabled"
VIEWS_MIN_INTERVAL_S = 0.25  # tree/table/topology refresh at most 4 times a second
# ... and no sooner than this many times their last cost (a big cluster: <= 20% of the GUI
# thread), up to once a second (a value must reach the screen within 2 s of its measurement).
VIEWS_COST_FACTOR = 5
VIEWS_MAX_INTERVAL_S = 1.0
VIEWS_SPLIT_S = 0.015  # views that cost more are refreshed over two frames (the table 67 ms later)
VIEWS_HEAVY_S = 0.010  # a views refresh past this (a big cluster) makes heavy chart recomputes wait a frame
SETTINGS_VERSION = 1
DEFAULT_SIZE = (1440, 900)
TREE_ROWS_SCAN_MAX = 400  # rows on one screen of the tree, with room to spare
MAP_MIN_NODES = 5  # from this many nodes the cluster map is the default view; fewer fit as cards


class MainWindow(QMainWindow):
    def __init__(self, source: DataSource, settings: QSettings, state: ClusterState | None = None, confirm=None,
                 title_label: str | None = None,
                 open_replay: Callable[[str], MainWindow] | None = None) -> None:
        """``open_replay(path)`` opens a replay window (raising RecordingError for a bad file);
        gui.app gives it, so this module never imports replay mode. Without it, File ▸ Open
        recording… is disabled."""
        super().__init__()
        self._open_replay = open_replay
        self.source = source
        self.settings = settings
        self.state = state or ClusterState()
        self.state.live_source = source.capabilities().live
        self.title_label = title_label or source.capabilities().label
        self.actions = Actions(source, self.state, self, confirm=confirm)
        self.logs_dialogs: list[LogsDialog] = []
        self.replay_windows: list[MainWindow] = []
        self.timeline: QWidget | None = None
        self._seen_revision = -1
        self._views_at = 0.0
        self._tree_busy = False
        self._views_cost_s = 0.0  # how long the last refresh_views took (sets the views' cadence)
        self._jobs_pending = False  # a split refresh: the jobs table is refreshed in the next frame
        self.gc_pacer: GcPacer | None = None  # the app's main installs one (gui/gcpace.py); tests keep Python's own
        self._links: dict[str, str] = {}
        self.setObjectName("fleetdeck-main")
        self.setDockNestingEnabled(True)

        # cluster tree
        self.tree_model = ClusterTreeModel(self.state, self)
        self.tree_proxy = TreeFilterProxy(self)
        self.tree_proxy.setSourceModel(self.tree_model)
        self.tree = QTreeView()
        self.tree.setModel(self.tree_proxy)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.header().resizeSection(0, 150)
        self.tree.doubleClicked.connect(self._tree_activated)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._tree_menu)
        self.tree_search = QLineEdit()
        self.tree_search.setPlaceholderText("Search nodes, GPUs, jobs…")
        self.tree_search.setClearButtonEnabled(True)
        self.tree_search.textChanged.connect(self._search)
        tree_box = QWidget()
        lay = QVBoxLayout(tree_box)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(self.tree_search)
        lay.addWidget(self.tree, 1)

        self.topology = TopologyCanvas(self.state)
        self.topology.migrate_requested.connect(self._migrate_drop)
        self.topology.job_clicked.connect(lambda j: self.jobs.select([j]))
        self.charts = ChartsPanel(self.state)
        self.jobs = JobsPanel(self.state, self.actions)
        self.jobs.logs_requested.connect(self.show_logs)
        self.jobs.migrate_requested.connect(self.migrate_dialog)
        self.jobs.submit_requested.connect(self.submit_dialog)
        self.submitter = Submitter(source, self.state, self)
        self.submitter.failed.connect(self._show_failure)
        self.submitter.succeeded.connect(lambda m: self.status.showMessage(m, 8000))
        self.submitter.submitted.connect(self.jobs.select)
        self.submit_dlg: SubmitDialog | None = None  # the open submit dialog
        self.events = EventLog(self.state)
        self.health = HealthPanel(self.state.alerts, clock=source.now_s)
        self.health.node_requested.connect(self._show_node_named)
        self.status = StatusBar(self.state, clock=source.now_s)
        self.setStatusBar(self.status)
        self.actions.busy_changed.connect(self.status.set_busy)
        self.actions.failed.connect(self._show_failure)
        self.actions.succeeded.connect(lambda m: self.status.showMessage(m, 5000))

        if not source.capabilities().can_control:
            # Replay (or any read-only source): nothing to drop a job onto, and say why.
            self.topology.setAcceptDrops(False)
            self.topology.viewport().setAcceptDrops(False)
            self.topology.setToolTip(f"{REPLAY_CONTROL_TIP} (drag-to-migrate works only on a live cluster)")
        self.recorder = RecordController(self, source)

        # The middle: the cluster map (every GPU on one screen) and the node cards (the detail
        # view: a node's GPUs in full, drag a job to migrate it), one at a time.
        self.map = ClusterMap(self.state, labels_of=self._node_labels)
        self.map.canvas.node_activated.connect(self.show_node_card)
        self.map.canvas.job_clicked.connect(lambda j: self.jobs.select([j]))
        self.jobs.group_selected.connect(self.map.canvas.set_outline_group)  # the map outlines the group
        self.jobs.group_charts_requested.connect(self.charts.add_group_charts)
        self.map.cards_requested.connect(lambda: self.show_view("cards", chosen=True))
        cards = QWidget()
        cards_lay = QVBoxLayout(cards)
        cards_lay.setContentsMargins(0, 0, 0, 0)
        cards_lay.setSpacing(0)
        back = QToolButton()
        back.setText("◀ Cluster map")
        back.setToolTip("Every GPU of the cluster on one screen, grouped by rack")
        back.clicked.connect(lambda: self.show_view("map", chosen=True))
        cards_bar = QToolBar()
        cards_bar.addWidget(back)
        cards_lay.addWidget(cards_bar)
        cards_lay.addWidget(self.topology, 1)
        self.center = QStackedWidget()
        self.center.addWidget(cards)
        self.center.addWidget(self.map)
        self._cards_page = cards
        self._view_chosen = False  # the person picked map or cards: no more automatic switch
        self._tray: QSystemTrayIcon | None = None
        self.notifications: list[tuple[str, str]] = []  # (title, text) shown, for tests and a later log
        self.setCentralWidget(self.center)
        self.dock_tree = self._dock("Cluster", tree_box, Qt.DockWidgetArea.LeftDockWidgetArea)
        # Rows that come into view (scrolled, expanded, dock shown) catch up at once.
        self.dock_tree.visibilityChanged.connect(lambda on: on and self.refresh_tree())
        self.tree.verticalScrollBar().valueChanged.connect(lambda _v: self.refresh_tree())
        self.tree.expanded.connect(lambda _i: self.refresh_tree())
        self.dock_charts = self._dock("Charts", self.charts, Qt.DockWidgetArea.RightDockWidgetArea)
        self.dock_jobs = self._dock("Jobs", self.jobs, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.dock_events = self._dock("Events", self.events, Qt.DockWidgetArea.RightDockWidgetArea)
        self.dock_health = self._dock("Health", self.health, Qt.DockWidgetArea.RightDockWidgetArea)
        # Charts and events take the full height on the right; jobs span the rest at the bottom.
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        self.setCorner(Qt.Corner.TopRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        self.splitDockWidget(self.dock_charts, self.dock_events, Qt.Orientation.Vertical)
        self.tabifyDockWidget(self.dock_events, self.dock_health)  # alerts beside the events they come from
        self.dock_events.raise_()
        self._menus()

        source.node_added.connect(self.state.add_node)
        source.node_removed.connect(self.state.remove_node)
        source.snapshot.connect(self.state.apply_snapshot)
        source.message.connect(self.state.apply_message)
        source.summaries.connect(self.state.apply_summaries)  # nodes behind a relay
        source.link_state.connect(self._on_link)
        source.problem.connect(lambda m: self.state.add_local_event(m, ok=False, kind="error"))
        source.notice.connect(lambda m: self.state.add_local_event(m))
        source.reset.connect(self.state.clear)
        source.reset.connect(self.events.reset)
        # Ages and "x s ago" follow the source's clock: the playhead in a replay.
        self.jobs.model.clock = source.now_s

        self.timer = QTimer(self)
        self.timer.setInterval(int(1000 / FRAME_HZ))
        self.timer.timeout.connect(self.tick)
        screen = self.screen().availableGeometry() if self.screen() is not None else None
        if screen is not None and screen.width() > 0:
            self.resize(min(DEFAULT_SIZE[0], screen.width()), min(DEFAULT_SIZE[1], screen.height()))
        else:
            self.resize(*DEFAULT_SIZE)
        # Default proportions (a saved layout replaces them): the topology keeps the middle.
        self._default_docks()
        self._layout_saved = isinstance(self.settings.value("window/state"), QByteArray)
        self.restore_settings()
        # After the saved layout: a replay window hides Record (File ▸ Record… says why), and a
        # layout saved by a replay window must not hide it in a live one.
        self.session_bar.setVisible(self.recorder.can_record)
        self._update_title()

    # ---- construction helpers ----
    def _dock(self, title: str, widget: QWidget, area) -> QDockWidget:
        d = QDockWidget(title, self)
        d.setObjectName(f"dock-{title.lower()}")
        d.setWidget(widget)
        d.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                      | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(area, d)
        return d

    def _menus(self) -> None:
        mb = self.menuBar()
        file = mb.addMenu("&File")
        open_rec = file.addAction("Open recording…")
        open_rec.setShortcut(QKeySequence.StandardKey.Open)
        open_rec.setToolTip("Replay a recording in a new window")
        open_rec.triggered.connect(lambda: self.open_recording())
        open_rec.setEnabled(self._open_replay is not None)
        file.addSeparator()
        for a in (self.recorder.act_record, self.recorder.act_stop, self.recorder.act_props):
            file.addAction(a)
        session = QToolBar("Session", self)
        session.setObjectName("toolbar-session")
        session.setMovable(False)
        session.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        session.addAction(self.recorder.act_record)
        session.addAction(self.recorder.act_stop)
        self.session_bar = session
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, session)

        cluster = mb.addMenu("&Cluster")
        connect = cluster.addAction("Connect to node…")
        connect.setShortcut(QKeySequence("Ctrl+Shift+N"))  # Ctrl+N is Jobs ▸ Submit…
        connect.triggered.connect(self.connect_dialog)
        connect.setEnabled(self.source.capabilities().can_add_nodes)
        cluster.addSeparator()
        quit_ = cluster.addAction("Quit")
        quit_.setShortcut(QKeySequence.StandardKey.Quit)
        quit_.triggered.connect(self.close)
        jobs = mb.addMenu("&Jobs")
        jobs.addAction(self.jobs.act_submit)
        jobs.addSeparator()
        for a in (self.jobs.act_pause, self.jobs.act_resume, self.jobs.act_migrate, self.jobs.act_priority,
                  self.jobs.act_cancel, self.jobs.act_logs):
            jobs.addAction(a)
        view = mb.addMenu("&View")
        for d in (self.dock_tree, self.dock_charts, self.dock_jobs, self.dock_events, self.dock_health):
            view.addAction(d.toggleViewAction())
        view.addSeparator()
        add_chart = view.addAction("Add chart")
        add_chart.triggered.connect(lambda: self.charts.add_chart())
        show_map = view.addAction("Cluster map")
        show_map.setShortcut(QKeySequence("Ctrl+1"))
        show_map.triggered.connect(lambda: self.show_view("map", chosen=True))
        show_cards = view.addAction("Node cards")
        show_cards.setShortcut(QKeySequence("Ctrl+2"))
        show_cards.triggered.connect(lambda: self.show_view("cards", chosen=True))
        fit = view.addAction("Fit topology")
        fit.setShortcut(QKeySequence("Ctrl+0"))
        fit.triggered.connect(self.topology.fit)
        self._theme_menu(view)
        find = QAction("Search", self)
        find.setShortcut(QKeySequence.StandardKey.Find)
        find.triggered.connect(lambda: (self.dock_tree.show(), self.tree_search.setFocus()))
        self.addAction(find)

    def _theme_menu(self, view: QMenu) -> None:
        """View > Theme > System/Light/Dark: applied at once and kept in the settings."""
        from PySide6.QtGui import QActionGroup
        from PySide6.QtWidgets import QApplication

        from gui.views.theme_setting import THEMES, apply_theme, load_theme, save_theme

        menu = view.addMenu("Theme")
        group = QActionGroup(self)
        group.setExclusive(True)
        current = load_theme(self.settings)
        self.theme_actions: dict[str, QAction] = {}
        for theme in THEMES:
            a = menu.addAction(theme.capitalize())
            a.setCheckable(True)
            a.setChecked(theme == current)
            a.setToolTip("Follow the desktop's colours" if theme == "system" else f"Always use the {theme} theme")
            group.addAction(a)

            def chosen(on: bool, theme=theme) -> None:
                if on:
                    save_theme(self.settings, theme)
                    apply_theme(QApplication.instance(), theme)
            a.toggled.connect(chosen)
            self.theme_actions[theme] = a

    # ---- running ----
    def start(self) -> None:
        self.timer.start()
        self.source.start()
        self.tick()

    def tick(self) -> None:
        """The one redraw: views only when the state changed, charts when data or time moved."""
        now = self.source.now_s()
        mono = time.monotonic()
        interval = min(VIEWS_MAX_INTERVAL_S, max(VIEWS_MIN_INTERVAL_S, VIEWS_COST_FACTOR * self._views_cost_s))
        views = self.state.revision != self._seen_revision and mono - self._views_at >= interval
        if self._jobs_pending:  # the second half of a split refresh: the jobs table
            self._jobs_pending, views = False, True
            self.jobs.refresh()
            self._views_cost_s += time.monotonic() - mono
        elif views:
            self._seen_revision = self.state.revision
            self._views_at = mono
            # A big cluster's views (~50 ms at 1,000 nodes) are split over two frames: the
            # jobs table in the next one, so no one frame carries them all.
            self._jobs_pending = self._views_cost_s > VIEWS_SPLIT_S
            self.refresh_views(jobs=not self._jobs_pending)
            self._views_cost_s = time.monotonic() - mono
        # A frame that refreshed the views leaves heavy chart recomputes to a later one.
        self.charts.redraw(now, defer_heavy=views and self._views_cost_s > VIEWS_HEAVY_S)
        self.actions.tick()
        self.status.tick_clock(now)
        if self.gc_pacer is not None:  # full collections after a frame, not inside one (gui/gcpace.py)
            self.gc_pacer.tick(busy=views)

    def refresh_views(self, jobs: bool = True) -> None:
        self.refresh_tree()
        if not self._view_chosen and len(self.state.nodes) >= MAP_MIN_NODES and self.view() == "cards":
            self.show_view("map")
        # The hidden one waits: a thousand cards cost more than the map that covers them.
        if self.view() == "cards" or len(self.state.nodes) < MAP_MIN_NODES:
            self.topology.refresh()
        if self.view() == "map":
            self.map.refresh()
        if jobs:
            self.jobs.refresh()
        self.events.refresh()
        self.health.refresh()
        self.status.refresh()
        self._notify_alerts()
        self._update_title()

    def refresh_tree(self) -> None:
        """The tree redoes only changed nodes, and of those only the ones on screen (the rest
        when they scroll into view); nothing while its dock is hidden (once shown, it catches up)."""
        if self._tree_busy or (self.isVisible() and not self.tree.isVisible()):
            return
        self._tree_busy = True  # expanding rows below emits expanded: no refresh inside a refresh
        try:
            structural = self.tree_model.rowCount() != len(self.state.nodes)
            self.tree_model.refresh(self._tree_visible_keys() if self.isVisible() else None)
            if structural:
                self.tree.expandToDepth(0)
        finally:
            self._tree_busy = False

    def _tree_visible_keys(self) -> set[str]:
        """Keys of the nodes with a row in the tree's viewport (a row's node is its top ancestor)."""
        keys: set[str] = set()
        bottom = self.tree.viewport().height()
        idx = self.tree.indexAt(QPoint(1, 1))
        for _ in range(TREE_ROWS_SCAN_MAX):
            if not idx.isValid() or self.tree.visualRect(idx).top() > bottom:
                break
            top = idx
            while top.parent().isValid():
                top = top.parent()
            k = top.data(KEY_ROLE)
            if k:
                keys.add(k[1])
            idx = self.tree.indexBelow(idx)
        return keys

    def _notify_alerts(self) -> None:
        """A new warning or critical alert of a live cluster: a desktop notification where the
        desktop has a tray, else a status-bar message; the Health tab has them all."""
        new = [a for a in self.state.alerts.take_new() if a.severity != "info"]
        if not new or not self.state.live_source:
            return
        title = f"{len(new)} new alert{'s' if len(new) > 1 else ''}" if len(new) > 1 else f"{new[0].severity}: {new[0].node}"
        text = new[0].message if len(new) == 1 else "; ".join(a.message for a in new[:3])
        self.notifications.append((title, text))
        if self._tray is None and QSystemTrayIcon.isSystemTrayAvailable():
            self._tray = QSystemTrayIcon(self.windowIcon(), self)
            self._tray.show()
        if self._tray is not None:
            self._tray.showMessage(title, text, QSystemTrayIcon.MessageIcon.Warning, 8000)
        else:
            self.status.showMessage(f"⚠ {title}: {text}", 10000)

    def _show_node_named(self, node_name: str) -> None:
        """The card of the node whose daemon is called ``node_name`` (alerts name the daemon)."""
        for key, node in self.state.nodes.items():
            if key == node_name or (node.inventory is not None and node.inventory.node == node_name):
                self.show_node_card(key)
                return

    def view(self) -> str:
        """Which view the middle shows: "map" or "cards"."""
        return "map" if self.center.currentWidget() is self.map else "cards"

    def show_view(self, which: str, chosen: bool = False) -> None:
        """Show the cluster map or the node cards; ``chosen``: the person asked (no more auto switch)."""
        self._view_chosen = self._view_chosen or chosen
        page = self.map if which == "map" else self._cards_page
        if which == "map":
            self.source.watch_detail(None)  # back on the map: no node's full stream is needed
        if self.center.currentWidget() is not page:
            self.center.setCurrentWidget(page)
            (self.map if which == "map" else self.topology).refresh()

    def show_node_card(self, key: str) -> None:
        """From the map to a node's card, centred, at full size."""
        # Ask first: behind a relay the follow goes out (and the detail starts coming) while the
        # cards are built; its full stream then drives the card and charts.
        self.source.watch_detail(key)
        self.show_view("cards", chosen=True)
        card = self.topology.cards.get(key)
        if card is not None:
            self.topology.resetTransform()
            self.topology.centerOn(card)

    def _node_labels(self, key: str) -> dict[str, str]:
        """A node's labels: the daemon's own, then the cluster file's (which win)."""
        node = self.state.nodes.get(key)
        labels = dict(node.inventory.labels) if node is not None and node.inventory is not None else {}
        addr = self.source.address(key)
        if addr is not None:
            labels.update(addr.labels)
        return labels

    def _update_title(self) -> None:
        s = self.state.summary()
        extra = ", ".join(f"{s[k]} {k}" for k in ("stale", "down", "connecting") if s.get(k))
        n = s["nodes"]
        title = f"Fleetdeck — {self.title_label} ({n} node{'s' if n != 1 else ''}{', ' + extra if extra else ''})"
        if self.windowTitle() != title:
            self.setWindowTitle(title)

    def set_timeline(self, widget: QWidget) -> None:
        """For replay: put a timeline (play/pause/speed/seek) in a toolbar along the bottom."""
        self.timeline = widget
        bar = QToolBar("Timeline", self)
        bar.setObjectName("toolbar-timeline")
        bar.setMovable(False)
        bar.addWidget(widget)
        self.addToolBar(Qt.ToolBarArea.BottomToolBarArea, bar)

    def set_recording(self, active: bool, duration_s: float = 0.0, size_bytes: int = 0) -> None:
        """For the recording feature: show or hide ● REC with its duration and file size."""
        self.status.set_recording(active, duration_s, size_bytes)

    def _on_link(self, key: str, state: str) -> None:
        before = self._links.get(key)
        self._links[key] = state
        self.state.set_link(key, state)
        if state == "live" and before in ("stale", "down"):
            self.state.add_local_event(f"node {key!r} is live again", node=key, kind="node")

    # ---- user actions ----
    def _search(self, text: str) -> None:
        self.tree_proxy.setFilterFixedString(text)
        if text:
            self.tree.expandAll()

    def _tree_activated(self, index) -> None:
        key = index.siblingAtColumn(0).data(KEY_ROLE)
        if key and key[0] == "job":
            self.jobs.select([key[2]])
            self.dock_jobs.raise_()

    def _tree_menu(self, pos) -> None:
        key = self.tree.indexAt(pos).siblingAtColumn(0).data(KEY_ROLE)
        if not key or key[0] != "node" or not self.source.capabilities().can_control:
            return
        menu = QMenu(self)
        act = menu.addAction(f"Remove node {key[1]}")
        act.setToolTip("Stop following this node and forget it (the node itself keeps running)")
        act.triggered.connect(lambda _=False, k=key[1]: self.remove_node(k))
        menu.popup(self.tree.viewport().mapToGlobal(pos))

    def remove_node(self, key: str) -> None:
        """Stop following a node and forget it, also from the remembered nodes."""
        addr = self.source.address(key)
        self.source.remove_node(key)
        self._links.pop(key, None)
        saved = self.remembered_nodes()
        kept = [a for a in saved if a.key != key and (addr is None or a.endpoint != addr.endpoint)]
        if len(kept) != len(saved):
            self.settings.setValue("nodes/remembered", json.dumps(
                [{"key": a.key, "endpoint": a.endpoint, "server_key": a.server_key} for a in kept]))
        self.state.add_local_event(f"node {key!r} removed", node="", kind="node")

    def _show_failure(self, message: str) -> None:
        self.status.showMessage("⚠ " + message, 15000)
        if self.isVisible() and self.settings.value("ui/failure_popups", True, type=bool):
            box = QMessageBox(QMessageBox.Icon.Warning, "Fleetdeck", message, QMessageBox.StandardButton.Ok, self)
            box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            box.open()

    def _migrate_drop(self, job_id: str, source_key: str, target_key: str) -> None:
        if not self.source.capabilities().can_control:
            self.status.showMessage(f"⚠ {REPLAY_CONTROL_TIP}: job {job_id} was not migrated", 8000)
            return
        self.actions.migrate(job_id, target_key)

    # ---- replay ----
    def open_recording(self, path: str | None = None) -> MainWindow | None:
        """Replay a recording in a new window; a bad file gives a message box, not a traceback."""
        from agentd.store.recording import RecordingError

        if self._open_replay is None:
            return None
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Open recording", "", FILE_FILTER)
            if not path:
                return None
        try:
            w = self._open_replay(path)
        except RecordingError as exc:
            self.bad_recording(str(exc))
            return None
        w.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        w.destroyed.connect(lambda *_: self.replay_windows.remove(w) if w in self.replay_windows else None)
        self.replay_windows.append(w)
        return w

    def bad_recording(self, message: str) -> None:
        self.state.add_local_event(message, ok=False, kind="error")
        self.status.showMessage("⚠ " + message, 15000)
        box = QMessageBox(QMessageBox.Icon.Warning, "Fleetdeck — cannot open recording", message,
                          QMessageBox.StandardButton.Ok, self)
        box.setObjectName("bad-recording")
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    def migrate_dialog(self, job_id: str) -> None:
        source_key = self.state.node_of_job(job_id)
        targets = [k for k, n in self.state.nodes.items() if k != source_key and n.link == "live"]
        if not targets:
            self._show_failure(f"no other live node to migrate job {job_id} to; connect another node first")
            return
        dlg = TargetDialog(job_id, source_key or "?", targets, self)
        if dlg.exec():
            self.actions.migrate(job_id, dlg.target())

    def submit_dialog(self) -> None:
        """Jobs ▸ Submit…: not modal-blocking (the views keep updating); sends on Submit."""
        if not self.source.capabilities().can_control:
            self.status.showMessage(f"⚠ {REPLAY_CONTROL_TIP}: nothing can be submitted here", 8000)
            return
        nodes = offers(self.source, self.state)
        if not nodes:
            self._show_failure("no live node to submit to; wait until a node is live, or connect one "
                               "(Cluster ▸ Connect to node…)")
            return
        if self.submit_dlg is not None:
            self.submit_dlg.raise_()
            return
        ids = self.jobs.selected()
        dlg = SubmitDialog(nodes, preselect=(self.state.node_of_job(ids[0]) or "") if ids else "", parent=self)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.accepted.connect(lambda: dlg.plan is not None and self.submitter.submit(dlg.plan))
        dlg.finished.connect(lambda *_: setattr(self, "submit_dlg", None))
        self.submit_dlg = dlg
        dlg.open()

    def show_logs(self, job_id: str) -> None:
        key = self.state.node_of_job(job_id)
        if key is None:
            return
        j = self.state.job(job_id)
        dlg = LogsDialog(self.source, key, job_id, f"{j.name} ({job_id})" if j and j.name else job_id, self)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.destroyed.connect(lambda *_: self.logs_dialogs.remove(dlg) if dlg in self.logs_dialogs else None)
        self.logs_dialogs.append(dlg)
        dlg.show()

    def connect_dialog(self) -> None:
        dlg = ConnectDialog(self)
        if dlg.exec():
            addr = dlg.address()
            self.add_node(addr, remember=True)

    def add_node(self, addr: NodeAddress, remember: bool = False) -> None:
        self.source.add_node(addr)
        if remember:
            saved = self.remembered_nodes()
            if all(a.endpoint != addr.endpoint for a in saved):
                saved.append(addr)
                self.settings.setValue("nodes/remembered", json.dumps(
                    [{"key": a.key, "endpoint": a.endpoint, "server_key": a.server_key} for a in saved]))

    def remembered_nodes(self) -> list[NodeAddress]:
        try:
            raw = json.loads(self.settings.value("nodes/remembered", "[]") or "[]")
            return [NodeAddress(key=d["key"], endpoint=d["endpoint"], server_key=d.get("server_key")) for d in raw]
        except (ValueError, KeyError, TypeError):
            return []

    def _default_docks(self) -> None:
        w, h = self.width(), self.height()
        self.resizeDocks([self.dock_tree, self.dock_charts], [int(w * 0.21), int(w * 0.33)], Qt.Orientation.Horizontal)
        self.resizeDocks([self.dock_charts, self.dock_events, self.dock_jobs], [int(h * 0.62), int(h * 0.2), int(h * 0.3)],
                         Qt.Orientation.Vertical)

    def showEvent(self, ev) -> None:
        super().showEvent(ev)
        # Before the first show the dock layout has no size and squeezes the side docks (a
        # 1366x768 laptop got a 264 px chart dock): apply the proportions again, once.
        if not self._layout_saved and not getattr(self, "_docks_sized", False):
            self._docks_sized = True
            QTimer.singleShot(0, self._default_docks)

    # ---- settings ----
    def restore_settings(self) -> None:
        s = self.settings
        geo = s.value("window/geometry")
        if isinstance(geo, QByteArray):
            self.restoreGeometry(geo)
        st = s.value("window/state")
        if isinstance(st, QByteArray):
            self.restoreState(st, SETTINGS_VERSION)
        hdr = s.value("jobs/header")
        if isinstance(hdr, QByteArray):
            self.jobs.table.horizontalHeader().restoreState(hdr)
        try:
            charts = json.loads(s.value("charts/choices", "null") or "null")
        except ValueError:
            charts = None
        self.charts.restore(charts if isinstance(charts, list) else None)

    def save_settings(self) -> None:
        s = self.settings
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState(SETTINGS_VERSION))
        s.setValue("jobs/header", self.jobs.table.horizontalHeader().saveState())
        s.setValue("charts/choices", json.dumps(self.charts.settings()))
        s.sync()

    def shutdown(self) -> None:
        """Stop the timer and the source; idempotent."""
        self.timer.stop()
        for w in list(self.replay_windows):
            w.close()
        for d in list(self.logs_dialogs):
            d.close()
        if getattr(self.charts, "history", None) is not None:
            self.charts.history.close()
        self.source.stop()

    def closeEvent(self, ev) -> None:
        self.save_settings()
        self.shutdown()
        super().closeEvent(ev)
