"""Relays: one agentd that follows many and serves them all (docs/relays.md)."""

from __future__ import annotations

from pathlib import Path

from agentd.clusterfile import load_cluster
from agentd.relay.service import Relay, RelayHost

__all__ = ["Relay", "RelayHost", "attach_relay"]


def attach_relay(host: RelayHost, cluster_path: str | Path, keys_dir: Path | None = None) -> Relay:
    """Start following the nodes of ``cluster_path``; raises ClusterFileError (a ValueError
    naming the file and the field) when the file is wrong. The host's own node is skipped
    when the file lists it (a relay is in its own subtree already)."""
    cluster = load_cluster(cluster_path)
    return Relay(host, cluster, keys_dir)
