"""``agentctl cluster``: build the cluster file the app and agentctl read.

``agentctl cluster from-slurm > cluster.toml`` asks ``sinfo`` for every node of the Slurm
cluster and writes one ``[[node]]`` per node, with its agentd endpoint and its partitions as
labels. Run it on any host where ``sinfo`` works (a login node).
"""

from __future__ import annotations

import argparse
import sys
import time

from agentd.cli.common import Verbs
from agentd.clusterfile import ClusterNode, dump_cluster
from agentd.control.slurm import (
    DEFAULT_AGENTD_PORT,
    SlurmCommands,
    SlurmError,
    detect_slurm,
    slurm_nodes,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
ADDRESS_CHOICES = ("addr", "hostname", "name")


def register(verbs: Verbs) -> None:
    """Add ``cluster from-slurm`` to agentctl's verbs."""
    p = verbs.add(
        "cluster", help="build a cluster file",
        description="Build the cluster file the app and agentctl read. 'agentctl cluster from-slurm > cluster.toml' "
                    "asks sinfo for every node of the Slurm cluster and writes one [[node]] per node, with its agentd "
                    "endpoint and its partitions as labels. Run it on any host where sinfo works (a login node).")
    fs = verbs.group(p, "cluster_verb").add(
        "from-slurm", help="one [[node]] per Slurm node, from sinfo (TOML on stdout)",
        description="Print a cluster file (TOML) with one [[node]] per node that sinfo lists: "
                    "name, endpoint tcp://<NodeAddr>:PORT, labels partition=<partitions>.",
    )
    fs.add_argument("--port", type=int, default=DEFAULT_AGENTD_PORT, help=f"agentd request port on each node (default {DEFAULT_AGENTD_PORT})")
    fs.add_argument("--partition", "-p", metavar="NAME", help="only the nodes of this partition")
    fs.add_argument("--address", choices=ADDRESS_CHOICES, default="addr",
                    help="what the endpoint uses: Slurm's NodeAddr (default), NodeHostname or NodeName")
    fs.add_argument("--name", metavar="CLUSTER", default="", help="cluster name written at the top of the file")
    fs.add_argument("--key-dir", metavar="DIR", default="",
                    help="set server_key = DIR/<node>.key on each node (needed off loopback: CURVE)")
    fs.set_defaults(func=from_slurm)


def from_slurm(args: argparse.Namespace) -> int:
    """The ``cluster from-slurm`` handler: TOML on stdout, reasons on stderr."""
    if not 1 <= args.port <= 65535:
        print(f"agentctl: --port {args.port} is out of range; use 1 to 65535", file=sys.stderr)
        return EXIT_USAGE
    cmds = SlurmCommands()
    reason = detect_slurm(cmds)
    if reason is not None:
        print(f"agentctl: cannot read the Slurm cluster: {reason}", file=sys.stderr)
        return EXIT_FAILED
    try:
        found = slurm_nodes(cmds, partition=args.partition)
    except SlurmError as exc:
        print(f"agentctl: sinfo failed: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    if not found:
        where = f"partition {args.partition!r}" if args.partition else "this Slurm cluster"
        print(f"agentctl: sinfo lists no nodes in {where}; check the partition name with `sinfo -s`", file=sys.stderr)
        return EXIT_FAILED
    key_dir = args.key_dir.rstrip("/")
    nodes = []
    for n in found:
        host = {"addr": n.addr, "hostname": n.hostname, "name": n.name}[args.address] or n.name
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # IPv6 literal
        labels = {"partition": ",".join(p.rstrip("*") for p in n.partitions), "scheduler": "slurm"}
        nodes.append(ClusterNode(
            name=n.name, endpoint=f"tcp://{host}:{args.port}",
            server_key=f"{key_dir}/{n.name}.key" if key_dir else "", labels=labels,
        ))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    sys.stdout.write(f"# Fleetdeck cluster file, written by `agentctl cluster from-slurm` at {stamp}.\n")
    sys.stdout.write(dump_cluster(nodes, name=args.name))
    return EXIT_OK


handler = from_slurm
