"""Cluster files for the app: agentd.clusterfile's loader, as the app's NodeAddress list.

The app also reads a top-level ``relays = ["tcp://r1:7710", "tcp://r2:7710"]``: relays that
serve the same nodes. The app follows each relay; every node behind them appears once, served
by one relay at a time, and moves to the other when the serving relay goes stale or down
(docs/relays.md). A file may hold relays, ``[[node]]`` tables, or both.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from agentd.clusterfile import ClusterFileError
from agentd.clusterfile import load_cluster as _load_cluster
from gui.sources.base import NodeAddress

__all__ = ["ClusterFileError", "load_cluster"]


def load_cluster(path: Path) -> list[NodeAddress]:
    p = Path(path).expanduser()
    try:
        data = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        data = {}  # the loader below says what is wrong, in its words
    relays = data.get("relays", [])
    if not isinstance(relays, list) or not all(isinstance(r, str) and r.startswith(("tcp://", "ipc://")) for r in relays):
        raise ClusterFileError(f"cluster file {p}: relays must be a list of endpoints like "
                               f'["tcp://r1:7710", "tcp://r2:7710"], got {relays!r}')
    out = [NodeAddress(key=f"relay {r.split('://', 1)[1]}", endpoint=r) for r in relays]
    if relays and "node" not in data:
        return out
    return out + [NodeAddress(key=n.name, endpoint=n.endpoint, server_key=n.server_key or None, labels=dict(n.labels))
                  for n in _load_cluster(p).node]
