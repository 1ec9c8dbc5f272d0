"""What every agentctl verb shares: global options, finding nodes and jobs, calling them."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from agentd.clusterfile import ClusterFileError, load_cluster
from agentd.config import DEFAULT_CTL
from agentd.metrics.units import human_bytes
from agentd.protocol.docs import plain_doc, summary
from agentd.protocol.limits import PRIORITY_MAX, PRIORITY_MIN
from agentd.protocol.messages import Reply, Request
from agentd.transport.auth import public_key_text
from agentd.transport.client import ClientError, NodeClient, RemoteError, Unreachable

GLOBAL_DEFAULTS: dict[str, Any] = {"node": None, "cluster": None, "json": False, "timeout": 5.0}


class CliError(Exception):
    """A one-line message for the user and an exit code (1 refused/failed, 2 usage/unreachable)."""

    def __init__(self, message: str, code: int = 1, remote_code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.remote_code = remote_code


def add_global_options(p: argparse.ArgumentParser, suppress: bool) -> None:
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p.add_argument("--node", action="append", metavar="NODE", default=d(None),
                   help="an agentd request endpoint (tcp://HOST:PORT) or a node name from --cluster; "
                        "repeatable (default tcp://127.0.0.1:7710)")
    p.add_argument("--cluster", metavar="FILE", default=d(None), help="cluster file (TOML, [[node]] tables)")
    p.add_argument("--json", action="store_true", default=d(False), help="machine-readable output on stdout")
    p.add_argument("--timeout", type=float_over(0, "--timeout"), metavar="S", default=d(5.0), help="seconds to wait for a node (default 5)")


class Verbs:
    """Where agentctl modules add their verbs (``register(verbs)``): every verb, and every
    action under a verb (``keys show``), gets the global options, so they work on either side
    of it. A verb that sends one protocol command takes its help from that command's
    documentation (agentd.protocol.docs, which docs/protocol.md is generated from)."""

    def __init__(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
                 common: argparse.ArgumentParser) -> None:
        self._subparsers = subparsers
        self._common = common

    def add(self, name: str, *, command: type[Request] | None = None, help: str | None = None,
            description: str | None = None) -> argparse.ArgumentParser:
        """A verb's parser; ``command``: the protocol request it sends, whose summary is the
        help line and whose documentation the description unless they are given."""
        if command is not None:
            help = help or summary(command)
            description = description or plain_doc(command)
        return self._subparsers.add_parser(name, parents=[self._common], help=help, description=description)

    def group(self, parser: argparse.ArgumentParser, dest: str) -> Verbs:
        """Actions under a verb (``recording info``): a required choice, named ``dest``."""
        sub = parser.add_subparsers(dest=dest, metavar="ACTION")
        sub.required = True
        return Verbs(sub, self._common)


def int_in(lo: int | None, hi: int | None, what: str) -> Callable[[str], int]:
    """An argparse ``type``: an integer in [lo, hi]; anything else is a usage error (exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} {text!r} is not a whole number") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            span = f"{lo} to {hi}" if lo is not None and hi is not None else (f"{lo} or more" if lo is not None else f"{hi} or less")
            raise argparse.ArgumentTypeError(f"{what} {value} is out of range; use {span}")
        return value

    return parse


def float_over(lo: float, what: str, *, inclusive: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number above ``lo`` (or equal, when ``inclusive``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} {text!r} is not a number") from None
        if not math.isfinite(value) or value < lo or (value == lo and not inclusive):
            raise argparse.ArgumentTypeError(f"{what} {text} is out of range; use a number {'of at least' if inclusive else 'above'} {lo:g}")
        return value

    return parse


def priority_value(text: str) -> int:
    """An argparse ``type`` for a priority: -10..10, higher is more important."""
    return int_in(PRIORITY_MIN, PRIORITY_MAX, "priority")(text)


@dataclass(frozen=True)
class Target:
    name: str  # from the cluster file; "" until hello says
    endpoint: str
    server_key: str = ""


def targets(args: argparse.Namespace) -> list[Target]:
    """The nodes a command addresses: the cluster file's nodes, narrowed to the ones named by
    ``--node NAME``, plus every ``--node ENDPOINT``; the default endpoint when none is given."""
    out: list[Target] = []
    given = list(args.node or [])
    endpoints = [v for v in given if "://" in v]
    names = [v for v in given if "://" not in v]
    if args.cluster:
        try:
            cluster = load_cluster(args.cluster)
        except ClusterFileError as exc:
            raise CliError(str(exc), 2) from None
        known = {n.name: n for n in cluster.node}
        for name in names:
            if name not in known:
                raise CliError(f"--node {name!r} is not a node of {args.cluster}; it lists: "
                               f"{', '.join(known)} (or give an endpoint tcp://HOST:PORT)", 2)
        wanted = [known[n] for n in dict.fromkeys(names)] if names else list(cluster.node)
        out += [Target(n.name, n.endpoint, n.server_key) for n in wanted]
    elif names:
        raise CliError(f"--node {names[0]!r} is neither an endpoint (tcp://HOST:PORT) nor, without --cluster FILE, "
                       "a node name; give the endpoint, or the cluster file that names it", 2)
    for ep in endpoints:
        out.append(Target("", ep))
    return out or [Target("", DEFAULT_CTL)]


def cluster_targets(args: argparse.Namespace) -> list[Target]:
    """Every node of ``--cluster`` (none without it), whatever ``--node`` narrowed to."""
    if not args.cluster:
        return []
    try:
        return [Target(n.name, n.endpoint, n.server_key) for n in load_cluster(args.cluster).node]
    except ClusterFileError as exc:
        raise CliError(str(exc), 2) from None


def key_text(target: Target) -> str:
    """The target's server key as z85 text, for requests that hand it to a daemon (a cluster
    file usually names a key file, which exists only on this machine)."""
    try:
        return public_key_text(target.server_key)
    except (ValueError, OSError) as exc:
        raise CliError(f"node {target.name or target.endpoint}: {exc}", 2) from None


def connect(args: argparse.Namespace, target: Target) -> NodeClient:
    try:
        return NodeClient(target.endpoint, server_key=target.server_key or None, timeout_s=args.timeout)
    except ValueError as exc:
        raise CliError(str(exc), 2) from None


def check_request(req: Request) -> None:
    """Validate ``req`` against its schema before it is sent: a value out of range is a usage
    error here (exit 2), not a refusal by the node (exit 1)."""
    try:
        msgspec.msgpack.decode(msgspec.msgpack.encode(req), type=type(req))
    except msgspec.ValidationError as exc:
        raise CliError(f"{req.__class__.__name__.lower()}: {exc}", 2) from None


def call(client: NodeClient, req: Request) -> Reply:
    """One request; errors become CliError with the right exit code."""
    check_request(req)
    try:
        return client.call(req)
    except Unreachable as exc:
        raise CliError(str(exc), 2) from None
    except RemoteError as exc:
        note = f" (field: {exc.field})" if exc.field and exc.field not in exc.message else ""
        raise CliError(exc.message + note, 1, exc.code) from None
    except ClientError as exc:
        raise CliError(str(exc), 1) from None


def node_of_job(job_id: str) -> str:
    node, sep, rest = job_id.rpartition(".")
    return node if sep and rest else ""


def client_for_job(args: argparse.Namespace, job_id: str) -> tuple[NodeClient, str]:
    """The client of the node that owns ``job_id`` (``node.N``; bare ``N`` with one node)."""
    ts = targets(args)
    if job_id.isdigit():
        if len(ts) != 1:
            raise CliError(f"job id {job_id!r} is ambiguous across {len(ts)} nodes; use the full id NODE.{job_id}", 2)
        return connect(args, ts[0]), job_id
    node = node_of_job(job_id)
    if not node:
        raise CliError(f"job id {job_id!r} is not of the form NODE.N (see `agentctl jobs`)", 2)
    named = [t for t in ts if t.name == node]
    if named:
        return connect(args, named[0]), job_id
    unreachable = []
    relays = []
    for t in ts:
        if t.name:
            continue
        c = connect(args, t)
        try:
            if c.hello().node == node:
                return c, job_id
            if "relay" in c.hello().capabilities:  # a relay hands it to the node that owns it
                relays.append(c)
                continue
        except ClientError as exc:
            unreachable.append(str(exc))
        c.close()
    if relays:
        for extra_relay in relays[1:]:
            extra_relay.close()
        return relays[0], job_id
    extra = f" ({'; '.join(unreachable)})" if unreachable else ""
    raise CliError(f"no node named {node!r} among the given nodes; pass --node ENDPOINT or --cluster FILE{extra}", 2)


def each_node(args: argparse.Namespace) -> Iterator[tuple[Target, NodeClient]]:
    for t in targets(args):
        c = connect(args, t)
        try:
            yield t, c
        finally:
            c.close()


# C0 controls but tab and newline, DEL, and C1 controls (0x9b is a one-byte CSI on some
# terminals): whatever could move the cursor, recolour, retitle or rewrite a terminal.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: object) -> str:
    """``text`` safe to print on a terminal: job names, argv, logs, events and recordings come
    from other people. Escape sequences and control characters other than newline and tab
    become visible ``\\xNN``; a carriage return becomes a newline (``\\r\\n`` one newline)."""
    s = str(text).replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", s)


def cell(text: object) -> str:
    """``clean(text)`` for a rich table cell: rich markup such as ``[red]`` is shown as typed."""
    from rich.markup import escape

    return escape(clean(text))


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(msgspec.to_builtins(obj)) + "\n")
    sys.stdout.flush()


def human_rate(n: float | None) -> str:
    return "—" if n is None else human_bytes(n) + "/s"
