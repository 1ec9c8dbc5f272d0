"""The cluster file shared by agentctl and the app: one ``[[node]]`` table per node.

    [[node]]
    name = "gpu-a"
    endpoint = "tcp://10.0.0.5:7710"
    server_key = "~/.config/fleetdeck/gpu-a.key"   # optional; required off loopback
    labels = { rack = "r1" }                          # optional; the app's cluster map groups
                                                      # nodes by group, rack, switch or partition

A top-level ``prometheus = "http://prom:9090"`` (optional) names a Prometheus that scrapes these
nodes; the app reads chart spans longer than its own hour from it (6 h, 24 h, 7 d).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec


class ClusterNode(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    endpoint: str
    name: str = ""  # defaults to the endpoint
    server_key: str = ""
    labels: dict[str, str] = {}


class ClusterFile(msgspec.Struct, frozen=True, kw_only=True):
    name: str = ""
    prometheus: str = ""  # a Prometheus scraping these nodes: the app's charts read spans past 1 h there
    node: list[ClusterNode] = []


class ClusterFileError(ValueError):
    """The cluster file is missing or wrong; the message names the file and the field."""


def load_cluster(path: str | Path) -> ClusterFile:
    p = Path(path).expanduser()
    try:
        data = tomllib.loads(p.read_text())
    except OSError as exc:
        raise ClusterFileError(f"cannot read cluster file {p}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ClusterFileError(f"cluster file {p} is not valid TOML: {exc}") from None
    try:
        cluster = msgspec.convert(data, ClusterFile)
    except msgspec.ValidationError as exc:
        raise ClusterFileError(f"cluster file {p}: {exc} (each [[node]] needs name and endpoint)") from None
    if not cluster.node:
        raise ClusterFileError(f"cluster file {p} has no [[node]] tables; add one per agentd with name and endpoint")
    for i, n in enumerate(cluster.node, 1):
        if not n.endpoint.startswith(("tcp://", "ipc://")):
            raise ClusterFileError(f"cluster file {p}: node #{i} needs endpoint = \"tcp://HOST:PORT\", got {n.endpoint!r}")
    cluster = msgspec.structs.replace(cluster, node=[n if n.name else msgspec.structs.replace(n, name=n.endpoint) for n in cluster.node])
    names = [n.name for n in cluster.node]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ClusterFileError(f"cluster file {p}: node name(s) {', '.join(sorted(dup))} appear more than once")
    return cluster


def dump_cluster(nodes: list[ClusterNode], name: str = "") -> str:
    """TOML text of a cluster file (what ``agentctl cluster from-slurm`` prints)."""
    lines = [f'name = "{name}"', ""] if name else []
    for n in nodes:
        lines += ["[[node]]", f'name = "{n.name}"', f'endpoint = "{n.endpoint}"']
        if n.server_key:
            lines.append(f'server_key = "{n.server_key}"')
        if n.labels:
            inner = ", ".join(f'{k} = "{v}"' for k, v in sorted(n.labels.items()))
            lines.append(f"labels = {{ {inner} }}")
        lines.append("")
    return "\n".join(lines)
