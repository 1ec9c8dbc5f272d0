"""Python's garbage collector, kept out of the frames of a big cluster.

At 1,000 nodes the app holds ~240,000 objects the cycle collector tracks, and makes ~20,000 a
second that live about a second (each node's records are replaced at every relay tick). Left
to itself, Python moved nearly all of them up to its oldest generation (each young pass found
them still alive) and started a full collection of everything every ~2 s: ~80 ms of the GUI
thread in whatever frame allocated at that moment — it was the frame p95 (bench/scale.py
--parts prints each generation's pauses).

:class:`GcPacer`, ticked by the window after each frame:

- ``gc.freeze()`` after every frame: what is alive then moves to the permanent generation,
  which no automatic pass walks (the move is constant time). Python's own passes now only
  ever see the objects made since the last frame: each is short, whatever the cluster's size.
- every ``all_s`` (5 min), in a frame that did not refresh the views, everything is unfrozen
  and collected once (the ~80 ms pause, once in 5 minutes): the reference cycles that became
  garbage meanwhile are freed then.

Frozen objects are still freed by reference counting the moment they are dropped (the records
the app replaces every second are); only garbage *cycles* (a few hundred objects a minute here)
wait up to ``all_s``. Installed by the app's ``main`` (and by the scale bench, as the app runs)
— not by MainWindow, so tests keep Python's own collector.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

ALL_S = 300.0


class GcPacer:
    """Owns the process's cycle collection while installed (see the module's docstring)."""

    def __init__(self, all_s: float = ALL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.all_s, self.clock = all_s, clock
        self.installed = False
        self._all_at = 0.0
        self.all_runs = 0  # full collections done (for tests and the bench)

    def install(self) -> None:
        if not self.installed:
            self.installed = True
            self._all_at = self.clock()
            gc.freeze()

    def uninstall(self) -> None:
        """Python's own collector again, everything unfrozen."""
        if self.installed:
            self.installed = False
            gc.unfreeze()

    def tick(self, busy: bool = False) -> bool:
        """After a frame: freeze what is alive, or, when due, collect everything first. A
        ``busy`` frame (one that refreshed the views) leaves the full collection to a later
        one unless it is overdue by half again (a small cluster may refresh every frame).
        Returns whether it collected everything."""
        if not self.installed:
            return False
        waited = self.clock() - self._all_at
        if waited >= self.all_s and (not busy or waited >= 1.5 * self.all_s):
            self._all_at = self.clock()
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self.all_runs += 1
            return True
        gc.freeze()
        return False
