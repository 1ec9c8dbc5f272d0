"""The Slurm tests' fixture: one real single-node Slurm per session (tests/slurm/cluster.py).

Skips, loudly and with the reason, only where Slurm or munge is not installed or does not start.
"""

from __future__ import annotations

import sys

import pytest

from tests.slurm.cluster import SlurmCannotStart, SlurmCluster, single_node_slurm

__all__ = ["SlurmCluster", "slurm_cluster"]


@pytest.fixture(scope="session")
def slurm_cluster():
    try:
        with single_node_slurm() as cluster:
            yield cluster
    except SlurmCannotStart as exc:
        msg = f"SLURM TESTS SKIPPED: {exc}"
        print(f"\n{'!' * 80}\n{msg}\n{'!' * 80}", file=sys.stderr)
        pytest.skip(msg)
