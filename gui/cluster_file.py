"""Cluster files for the app: agentd.clusterfile's loader, as the app's NodeAddress list."""

from __future__ import annotations

from pathlib import Path

from agentd.clusterfile import ClusterFileError
from agentd.clusterfile import load_cluster as _load_cluster
from gui.sources.base import NodeAddress

__all__ = ["ClusterFileError", "load_cluster"]


def load_cluster(path: Path) -> list[NodeAddress]:
    return [NodeAddress(key=n.name, endpoint=n.endpoint, server_key=n.server_key or None, labels=dict(n.labels))
            for n in _load_cluster(path).node]
