"""Guard against the PySide6 6.12 + pyqtgraph 0.14 crash on Python 3.11.

That pairing aborts with ``Fatal Python error: none_dealloc`` after a few hundred curve paints
(a refcount bug on None inside arrayToQPath). This test paints curves, with NaN gaps and the
min/max envelope the charts use, many hundreds of times; an upgrade that brings the crash back
kills the test process instead of passing.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
import pytest
from PySide6.QtGui import QImage, QPainter

from gui.series import decimate_minmax

PAINTS = 1000
FULL_RENDER_EVERY = 100  # a whole-widget render is slow; the curve paint is the crash site


@pytest.mark.gui
def test_curves_survive_many_paints(qtbot):
    plot = pg.PlotWidget()
    qtbot.addWidget(plot)
    plot.resize(640, 240)
    plot.getPlotItem().setClipToView(True)
    curves = [plot.plot(pen=pg.mkPen(i), connect="finite") for i in range(4)]
    img = QImage(640, 240, QImage.Format.Format_ARGB32)
    rng = np.random.default_rng(1)
    t = np.arange(3600, dtype=np.float64)
    painted = 0
    for n in range(PAINTS):
        for i, c in enumerate(curves):
            v = rng.random(3600).astype(np.float32) * 100
            v[(n * 7 + i) % 3000:(n * 7 + i) % 3000 + 50] = np.nan
            dt, dv = decimate_minmax(t, v, 300)
            c.setData(dt, dv, connect="finite")
        img.fill(0)
        p = QPainter(img)
        if n % FULL_RENDER_EVERY == 0:
            plot.render(p)
        else:
            for c in curves:
                c.curve.paint(p, None, None)
        p.end()
        painted += 1
    assert painted == PAINTS
    # and a final full render really draws the curves: many distinct colours on the canvas
    img.fill(0)
    p = QPainter(img)
    plot.render(p)
    p.end()
    colours = {img.pixel(x, y) for x in range(60, 640, 4) for y in range(10, 200, 4)}
    assert len(colours) > 4
