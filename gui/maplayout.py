"""Geometry of the cluster map: pure Python, no Qt, so the layout and hit-testing are tested
without a display.

Nodes are grouped (rack, switch, partition: :func:`group_of`); each group is a box holding its
nodes in a grid, each node a small grid of GPU tiles. Boxes are packed in shelves across the
width. :func:`layout` picks the largest tile size at which the whole cluster fits the given
height (1,000 nodes x 8 GPUs fit a 1920x1080 screen at the smallest sizes) and otherwise the
smallest one, for the view to scroll. Everything is integers in widget pixels.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

# Labels (from the cluster file's ``labels = { rack = "r1" }`` or the daemon's own labels) that
# name a node's group, in order of preference.
GROUP_LABEL_KEYS = ("group", "rack", "switch", "partition")
# Tile edge lengths tried, largest first. Below 4 px a tile's colour is no longer readable.
TILE_SIZES = (40, 32, 26, 22, 18, 15, 12, 10, 8, 7, 6, 5, 4)
VALUE_TEXT_MIN_TILE = 22  # tiles at least this big carry their value as text
NAME_ROW_MIN_TILE = 12  # nodes get a name row above their tiles from this tile size
NODE_COLS = 4  # GPUs per tile row inside a node (8 GPUs: 4 x 2)
BOX_PAD = 3
HEADER_H = 15
BOX_GAP = 6
MARGIN = 4

_TRAILING_NUMBER = re.compile(r"^(.*?)[-_.]?\d+$")


def group_of(name: str, labels: dict[str, str] | None = None) -> str:
    """A node's group: its first group label, else its name without the trailing number
    ("rack3-n07" -> "rack3-n", "sim-12" -> "sim"), else "nodes"."""
    for key in GROUP_LABEL_KEYS:
        value = (labels or {}).get(key)
        if value:
            return value
    m = _TRAILING_NUMBER.match(name)
    prefix = m.group(1) if m else name
    return prefix or "nodes"


@dataclass(frozen=True)
class Geometry:
    """Sizes of one layout: a tile, the gap between tiles, a node's cell and its content."""

    tile: int
    gap: int
    node_cols: int
    node_rows: int
    border: int  # the node's frame (its link state colour) around its tiles
    name_h: int  # a row for the node's name above its tiles (0: none)
    node_gap: int

    @property
    def node_w(self) -> int:
        return self.node_cols * self.tile + (self.node_cols - 1) * self.gap + 2 * self.border

    @property
    def node_h(self) -> int:
        return self.name_h + self.node_rows * self.tile + (self.node_rows - 1) * self.gap + 2 * self.border

    @property
    def cell_w(self) -> int:
        return self.node_w + self.node_gap

    @property
    def cell_h(self) -> int:
        return self.node_h + self.node_gap


def geometry(tile: int, max_gpus: int) -> Geometry:
    cols = max(1, min(NODE_COLS, max_gpus))
    rows = max(1, math.ceil(max_gpus / cols))
    gap = 1 if tile < 10 else 2
    return Geometry(tile=tile, gap=gap, node_cols=cols, node_rows=rows, border=1 if tile < 10 else 2,
                    name_h=13 if tile >= NAME_ROW_MIN_TILE else 0, node_gap=2 if tile < 10 else 5)


@dataclass
class GroupBox:
    """One group's box: a header row, then its nodes in ``cols`` columns."""

    name: str
    keys: list[str]
    x: int = 0
    y: int = 0
    cols: int = 1

    def rows(self) -> int:
        return max(1, math.ceil(len(self.keys) / self.cols))


@dataclass(frozen=True)
class Hit:
    """What is under a point: a group header, a node, or one GPU of a node."""

    group: str
    key: str = ""
    gpu: int | None = None


@dataclass
class MapLayout:
    geo: Geometry
    boxes: list[GroupBox]
    width: int
    height: int
    gpus: dict[str, int] = field(default_factory=dict)  # node key -> its GPU count
    _where: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (box index, slot)

    def __post_init__(self) -> None:
        self._where = {k: (b, i) for b, box in enumerate(self.boxes) for i, k in enumerate(box.keys)}

    def box_size(self, box: GroupBox) -> tuple[int, int]:
        g = self.geo
        n = min(len(box.keys), box.cols)
        return (2 * BOX_PAD + n * g.cell_w - g.node_gap, HEADER_H + 2 * BOX_PAD + box.rows() * g.cell_h - g.node_gap)

    def node_rect(self, key: str) -> tuple[int, int, int, int]:
        """(x, y, w, h) of a node's cell, frame and name row included."""
        b, i = self._where[key]
        box = self.boxes[b]
        r, c = divmod(i, box.cols)
        g = self.geo
        return (box.x + BOX_PAD + c * g.cell_w, box.y + HEADER_H + BOX_PAD + r * g.cell_h, g.node_w, g.node_h)

    def tile_rect(self, key: str, gpu: int) -> tuple[int, int, int, int]:
        x, y, _, _ = self.node_rect(key)
        g = self.geo
        r, c = divmod(gpu, g.node_cols)
        return (x + g.border + c * (g.tile + g.gap), y + g.name_h + g.border + r * (g.tile + g.gap), g.tile, g.tile)

    def hit(self, px: int, py: int) -> Hit | None:
        """The group, node and GPU under widget point (px, py), or None over empty space."""
        g = self.geo
        for box in self.boxes:
            w, h = self.box_size(box)
            if not (box.x <= px < box.x + w and box.y <= py < box.y + h):
                continue
            if py < box.y + HEADER_H:
                return Hit(box.name)
            c, dx = divmod(px - box.x - BOX_PAD, g.cell_w)
            r, dy = divmod(py - box.y - HEADER_H - BOX_PAD, g.cell_h)
            if c < 0 or r < 0 or c >= box.cols or dx >= g.node_w or dy >= g.node_h:
                return Hit(box.name)
            i = r * box.cols + c
            if i >= len(box.keys):
                return Hit(box.name)
            key = box.keys[i]
            tx, ty = dx - g.border, dy - g.name_h - g.border
            if tx < 0 or ty < 0:
                return Hit(box.name, key)
            tc, ox = divmod(tx, g.tile + g.gap)
            tr, oy = divmod(ty, g.tile + g.gap)
            gpu = tr * g.node_cols + tc
            if ox >= g.tile or oy >= g.tile or tc >= g.node_cols or gpu >= self.gpus.get(key, 0):
                return Hit(box.name, key)
            return Hit(box.name, key, gpu)
        return None


def _pack(boxes: list[GroupBox], geo: Geometry, width: int, cols: int) -> tuple[int, int]:
    """Shelf-pack boxes with at most ``cols`` node columns each; returns (used width, height)."""
    x = y = MARGIN
    shelf_h = used_w = 0
    for box in boxes:
        box.cols = max(1, min(cols, len(box.keys)))
        w = 2 * BOX_PAD + box.cols * geo.cell_w - geo.node_gap
        h = HEADER_H + 2 * BOX_PAD + box.rows() * geo.cell_h - geo.node_gap
        if x > MARGIN and x + w > width - MARGIN:
            x, y = MARGIN, y + shelf_h + BOX_GAP
            shelf_h = 0
        box.x, box.y = x, y
        x += w + BOX_GAP
        shelf_h = max(shelf_h, h)
        used_w = max(used_w, x - BOX_GAP + MARGIN)
    return used_w, y + shelf_h + MARGIN


def layout(groups: list[tuple[str, list[str]]], gpus: dict[str, int], width: int, height: int | None = None) -> MapLayout:
    """Lay out ``groups`` (name, node keys in display order) in ``width`` pixels.

    Picks the largest tile size whose layout fits ``height`` (None: the largest tile size, for a
    view that scrolls), and at that size the node columns per box that make the layout least tall.
    """
    width = max(width, 80)
    max_gpus = max(gpus.values(), default=0) or 1
    best: MapLayout | None = None
    for tile in TILE_SIZES:
        geo = geometry(tile, max_gpus)
        boxes = [GroupBox(name, list(keys)) for name, keys in groups if keys]
        fit_cols = max(1, (width - 2 * MARGIN - 2 * BOX_PAD + geo.node_gap) // geo.cell_w)
        biggest = max((len(b.keys) for b in boxes), default=1)
        chosen, chosen_h = 1, math.inf
        for cols in range(1, min(fit_cols, biggest) + 1):
            _, h = _pack(boxes, geo, width, cols)
            if h < chosen_h or (h == chosen_h and cols > chosen):
                chosen, chosen_h = cols, h
        used_w, h = _pack(boxes, geo, width, chosen)
        best = MapLayout(geo, boxes, max(used_w, 0), h, dict(gpus))
        if height is None or h <= height:
            return best
    assert best is not None
    return best
