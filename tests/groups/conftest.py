"""Fixtures of the group tests: clusters of real agentd daemons on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.groups.gang_helpers import Cluster


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[object]:
    made: list[Cluster] = []

    def make(names: list[str], gpus: int = 2) -> Cluster:
        c = Cluster(tmp_path, names, gpus)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
