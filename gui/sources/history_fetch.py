"""Long-span chart history fetched off the GUI thread (from the site's Prometheus).

A chart asks :meth:`HistoryFetcher.request` for its metric over a window; the answer arrives
later on the GUI thread through ``ready(token, series)`` or ``failed(token, message)``. Answers
are cached per (query, window rounded to its step) for ``CACHE_S``, so a chart that redraws
every second asks Prometheus about once a minute.
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor

from PySide6.QtCore import QObject, Signal

from gui.sources.prom_history import HistoryError, HistorySeries, PromHistory, step_for

CACHE_S = 60.0


class HistoryFetcher(QObject):
    """Range queries for charts, two at a time in worker threads."""

    ready = Signal(int, object)  # token, list[HistorySeries]
    failed = Signal(int, str)  # token, message naming the server and the remedy

    def __init__(self, url: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.client = PromHistory(url)  # HistoryError for a malformed URL: the caller says so
        self.url = self.client.url
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fleetdeck-history")
        self._tokens = itertools.count(1)
        self._cache: dict[tuple, tuple[float, list[HistorySeries]]] = {}

    def request(self, scope: str, name: str, t0: float, t1: float, node: str | None = None,
                job_id: str | None = None) -> tuple[int, list[HistorySeries] | None]:
        """(token, cached answer or None). Without a cached answer the fetch starts and the
        answer comes through ``ready``/``failed`` with that token."""
        step = step_for(t1 - t0)
        key = (scope, name, node, job_id, int(t0 // (4 * step)), int(t1 // (4 * step)))
        token = next(self._tokens)
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < CACHE_S:
            return token, hit[1]
        self._pool.submit(self._fetch, token, key, scope, name, t0, t1, node, job_id)
        return token, None

    def _fetch(self, token: int, key: tuple, scope: str, name: str, t0: float, t1: float,
               node: str | None, job_id: str | None) -> None:
        try:
            series = self.client.history(scope, name, t0, t1, node=node, job_id=job_id)
        except HistoryError as exc:
            self.failed.emit(token, str(exc))
            return
        self._cache[key] = (time.monotonic(), series)
        if len(self._cache) > 64:
            self._cache.pop(next(iter(self._cache)))
        self.ready.emit(token, series)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
