"""Cluster files: TOML with one [[node]] table per daemon.

    [[node]]
    name = "gpu-a"
    endpoint = "tcp://10.0.0.5:7710"
    server_key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"   # optional
    labels = { rack = "r1" }                                  # optional
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from gui.sources.base import NodeAddress


class ClusterFileError(ValueError):
    """A cluster file that cannot be used; the message names the file, the entry and the fix."""


def load_cluster(path: Path) -> list[NodeAddress]:
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ClusterFileError(f"cannot read cluster file {str(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ClusterFileError(f"cluster file {str(path)!r} is not valid TOML: {exc}") from None
    nodes = data.get("node")
    if not isinstance(nodes, list) or not nodes:
        raise ClusterFileError(f"cluster file {str(path)!r} has no [[node]] tables; add one per agentd with name and endpoint")
    out: list[NodeAddress] = []
    seen: set[str] = set()
    for i, n in enumerate(nodes, 1):
        endpoint = n.get("endpoint")
        if not isinstance(endpoint, str) or not endpoint.startswith(("tcp://", "ipc://")):
            raise ClusterFileError(f"cluster file {str(path)!r}: node #{i} needs endpoint = \"tcp://HOST:PORT\", got {endpoint!r}")
        name = n.get("name") or endpoint
        if name in seen:
            raise ClusterFileError(f"cluster file {str(path)!r}: node name {name!r} appears twice; names must be unique")
        seen.add(name)
        labels = n.get("labels", {})
        if not isinstance(labels, dict):
            raise ClusterFileError(f"cluster file {str(path)!r}: labels of node {name!r} must be a table, got {labels!r}")
        out.append(NodeAddress(key=str(name), endpoint=endpoint, server_key=n.get("server_key") or None,
                               labels={str(k): str(v) for k, v in labels.items()}))
    return out
