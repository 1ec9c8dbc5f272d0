"""GcPacer: after each frame what is alive is frozen (Python's own passes never walk it), a
garbage cycle waits for the periodic full collection, and uninstalling gives Python its
collector back with nothing left frozen."""

from __future__ import annotations

import gc
import weakref

import pytest


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def pacer():
    from gui.gcpace import GcPacer

    now = [0.0]
    p = GcPacer(all_s=300.0, clock=lambda: now[0])
    p.now = now  # type: ignore[attr-defined]
    try:
        yield p
    finally:
        p.uninstall()
        gc.collect()


def test_frozen_after_a_frame_a_cycle_waits_for_the_full_collection(pacer):
    pacer.install()
    assert gc.get_freeze_count() > 0
    c = _Cycle()
    ref = weakref.ref(c)
    del c
    assert not pacer.tick()  # a frame: the cycle (garbage already) is frozen with the rest
    gc.collect()
    assert ref() is not None, "a frozen cycle is not Python's to collect"
    pacer.now[0] = 299.0
    assert not pacer.tick()
    assert ref() is not None
    pacer.now[0] = 301.0
    assert not pacer.tick(busy=True)  # a frame that refreshed the views: later
    assert ref() is not None
    assert pacer.tick()  # due, and a quiet frame: everything collected
    assert ref() is None and pacer.all_runs == 1
    pacer.now[0] = 301.0 + 450.0  # overdue by half again: even a busy frame collects
    assert pacer.tick(busy=True) and pacer.all_runs == 2


def test_objects_alive_when_frozen_are_still_freed_by_reference_counting(pacer):
    pacer.install()

    class Plain:
        pass

    x = Plain()
    ref = weakref.ref(x)
    pacer.tick()
    del x
    assert ref() is None


def test_uninstall_unfreezes_everything(pacer):
    pacer.install()
    pacer.tick()
    pacer.uninstall()
    assert gc.get_freeze_count() == 0
    assert not pacer.tick()  # uninstalled: does nothing
    assert gc.get_freeze_count() == 0
