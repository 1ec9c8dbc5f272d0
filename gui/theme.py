"""Colours: load ramps and link states, chosen against the system palette (light or dark)."""

from __future__ import annotations

import itertools
import zlib

from PySide6.QtGui import QColor, QGuiApplication, QPalette

LINK_COLOURS = {"live": "#2e9e44", "stale": "#d89614", "down": "#d0342c", "connecting": "#7a7f87", "unreachable": "#d0342c"}
SEVERITY_COLOURS = {"critical": "#d0342c", "warning": "#d89614", "info": "#5b7bd5"}
SEVERITY_SYMBOLS = {"critical": "⬤", "warning": "▲", "info": "●"}
LINK_SYMBOLS = {"live": "●", "stale": "◐", "down": "○", "connecting": "◌", "unreachable": "○"}


def link_text(link: str, live_source: bool) -> str:
    """A node's link state for people: in a replay a node that was live then reads "recorded",
    so a recording never passes for the cluster as it is now."""
    word = "recorded" if link == "live" and not live_source else link
    return f"{LINK_SYMBOLS.get(link, '?')} {word}"
STATE_COLOURS = {
    "running": "#2e9e44", "paused": "#5b7bd5", "queued": "#7a7f87", "checkpointing": "#b07cc6",
    "migrating": "#b07cc6", "succeeded": "#6b8f71", "failed": "#d0342c", "cancelled": "#8a8a8a", "migrated": "#8a8a8a",
    "stale": "#d89614",
}
# Distinct, colour-blind-friendlier series colours (Okabe-Ito, then Tableau).
SERIES_COLOURS = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
                  "#4E79A7", "#F28E2B", "#59A14F", "#E15759", "#B07AA1", "#76B7B2", "#EDC948", "#9C755F"]


def is_dark() -> bool:
    app = QGuiApplication.instance()
    if app is None:
        return False
    return QGuiApplication.palette().color(QPalette.ColorRole.Window).lightness() < 128


def load_colour(pct: float | None, dark: bool | None = None) -> QColor:
    """Idle grey-blue through green and amber to red as utilisation climbs."""
    dark = is_dark() if dark is None else dark
    if pct is None:
        return QColor("#3a3d42" if dark else "#d9dce1")
    stops = [(0, (96, 125, 139)), (30, (67, 160, 71)), (70, (251, 192, 45)), (100, (229, 57, 53))]
    p = max(0.0, min(100.0, pct))
    for (p0, c0), (p1, c1) in itertools.pairwise(stops):
        if p <= p1:
            f = (p - p0) / (p1 - p0)
            rgb = [int(a + (b - a) * f) for a, b in zip(c0, c1)]
            c = QColor(*rgb)
            return c.darker(135) if dark else c
    return QColor(*stops[-1][1])


def text_on(bg: QColor) -> QColor:
    """Black or white, whichever reads better on ``bg``."""
    lum = 0.299 * bg.red() + 0.587 * bg.green() + 0.114 * bg.blue()
    return QColor("#111111") if lum > 150 else QColor("#ffffff")


def series_colour(i: int) -> QColor:
    c = QColor(SERIES_COLOURS[i % len(SERIES_COLOURS)])
    if is_dark() and c == QColor("#000000"):
        c = QColor("#dddddd")
    return c


# Job colours: one job keeps one colour in the map, the jobs table and the charts. Picked by a
# stable hash of the job's identity (its first id), so every view (and every run) agrees without
# sharing state. Mid-lightness hues that read on light and dark backgrounds, grey left out (idle).
JOB_PALETTE = ["#4E79A7", "#F28E2B", "#59A14F", "#E15759", "#B07AA1", "#76B7B2", "#EDC948", "#9C755F",
               "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8CD17D", "#FF9DA7",
               "#B6992D", "#499894", "#D37295", "#A0CBE8", "#FFBE7D", "#86BCB6", "#F1CE63", "#D4A6C8"]


def job_palette_index(identity: str) -> int:
    """The place in :data:`JOB_PALETTE` of a job (or an owner): a stable hash of ``identity``."""
    return zlib.crc32(identity.encode()) % len(JOB_PALETTE)


def job_colour_hex(identity: str) -> str:
    """The colour of a job (or an owner) as "#rrggbb"."""
    return JOB_PALETTE[job_palette_index(identity)]


def job_colour(identity: str) -> QColor:
    """:func:`job_colour_hex` as a QColor (for a job, pass its first id: ``JobRow.identity``)."""
    return QColor(job_colour_hex(identity))
