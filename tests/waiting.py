"""The one way a test waits for a condition: poll it with a deadline, fail naming what it
waited for. Nothing in the suite waits forever."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_for(cond: Callable[[], T], timeout_s: float = 10.0, what: str = "condition", poll_s: float = 0.02,
             sleep: Callable[[float], object] = time.sleep) -> T:
    """Call ``cond`` every ``poll_s`` seconds until it returns something truthy and return that;
    fail the test after ``timeout_s`` seconds, naming ``what``. ``sleep`` waits between polls
    (a Qt test passes one that processes events: ``lambda s: qtbot.wait(int(s * 1000))``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        sleep(poll_s)
