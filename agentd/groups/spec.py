"""The spec of a group: one run made of ranks on several nodes, from CLI flags or a TOML/JSON file.

    agentctl submit --nodes a,b,c [--ranks-per-node K | --per-gpu] [--gpus-per-rank G] [--name N]
                    [--role NAME:NODES[:RANKS]]... [--master-port P] [--spec group.toml] -- CMD...

``--nodes`` makes a group of one (unnamed) role; each ``--role`` adds a role on its nodes, with
RANKS ranks per node (default: ``--ranks-per-node``). ``--spec FILE`` reads the same fields from a
file (see docs/groups.md); flags given beside it override the file's values. Every bad input
raises :class:`GroupSpecError` naming the field, the value and the remedy.
"""

from __future__ import annotations

import argparse
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import msgspec

from agentd.protocol.errors import ErrorCode, ProtocolError

MAX_WORLD_SIZE = 65536
MAX_RANKS_PER_NODE = 1024
MAX_GPUS_PER_RANK = 64
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


class GroupSpecError(ProtocolError):
    """A group spec that cannot run: ``field`` names the culprit, the message the remedy."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(ErrorCode.INVALID, message, field)


class RoleSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """One role of a group: ``ranks_per_node`` ranks on each of ``nodes`` (None: the group's value)."""

    name: str
    nodes: list[str]
    ranks_per_node: int | None = None
    gpus_per_rank: int | None = None
    argv: list[str] = []  # empty: the group's argv (the program reads FLEETDECK_ROLE)


class GroupSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """A whole group. Either ``nodes`` (one unnamed role) or ``roles``; checked by :func:`check`."""

    argv: list[str] = []
    name: str = ""
    nodes: list[str] = []
    ranks_per_node: int = 1
    per_gpu: bool = False  # one rank per ``gpus_per_rank`` GPUs of each node
    gpus_per_rank: int = 0
    roles: list[RoleSpec] = []
    env: dict[str, str] = {}
    cwd: str | None = None
    master_port: int | None = None  # None: the daemon picks a free port on rank 0's node

    def effective_roles(self) -> list[RoleSpec]:
        """The roles, with the group's defaults filled in (``nodes`` alone is one role named '')."""
        roles = self.roles or [RoleSpec(name="", nodes=list(self.nodes))]
        return [RoleSpec(name=r.name, nodes=list(r.nodes),
                         ranks_per_node=r.ranks_per_node if r.ranks_per_node is not None else self.ranks_per_node,
                         gpus_per_rank=r.gpus_per_rank if r.gpus_per_rank is not None else self.gpus_per_rank,
                         argv=list(r.argv or self.argv)) for r in roles]

    def node_order(self) -> list[str]:
        """Every node of the group once, in order of first appearance: NODE_RANK is the index here."""
        seen: dict[str, None] = {}
        for r in self.effective_roles():
            seen.update(dict.fromkeys(r.nodes))
        return list(seen)


def _bad(message: str, field: str) -> NoReturn:
    raise GroupSpecError(message, field)


def _whole(value: object, field: str, lo: int, hi: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _bad(f"{field} {value!r} is not a whole number; give {what} as {lo}..{hi}", field)
    if not lo <= value <= hi:
        _bad(f"{field} {value} is out of range; give {what} as {lo}..{hi}", field)
    return value


def _check_nodes(nodes: Sequence[str], field: str) -> None:
    if not nodes:
        _bad(f"{field} is empty; name at least one node, e.g. --nodes gpu-a,gpu-b", field)
    for n in nodes:
        if not _NODE_RE.match(n):
            _bad(f"{field}: node name {n!r} is not a node name (letters, digits, '.', '_', '-'); "
                 "see `agentctl nodes` for the names", field)
    dupes = sorted({n for n in nodes if list(nodes).count(n) > 1})
    if dupes:
        _bad(f"{field} lists {', '.join(dupes)} more than once; name each node once and use "
             "--ranks-per-node for more ranks on it", field)


def check(spec: GroupSpec) -> GroupSpec:
    """Check a spec for everything that does not need the nodes' inventories; return it."""
    if spec.name and not _NAME_RE.match(spec.name):
        _bad(f"name {spec.name!r} is not a group name: 1-64 letters, digits, '.', '_' or '-', "
             "starting with a letter or digit", "name")
    if spec.nodes and spec.roles:
        _bad("give either nodes (--nodes: one role) or roles (--role NAME:NODES[:RANKS]: several), not both; "
             "move the nodes into a role", "nodes")
    if not spec.nodes and not spec.roles:
        _bad("the group has no nodes; give --nodes a,b,... or --role NAME:NODES[:RANKS]", "nodes")
    _whole(spec.ranks_per_node, "ranks_per_node", 1, MAX_RANKS_PER_NODE, "ranks per node")
    _whole(spec.gpus_per_rank, "gpus_per_rank", 0, MAX_GPUS_PER_RANK, "GPUs per rank")
    if spec.per_gpu and spec.ranks_per_node != 1:
        _bad("per_gpu (--per-gpu) sets the ranks per node from each node's GPUs; drop ranks_per_node "
             "(--ranks-per-node) or per_gpu", "per_gpu")
    if spec.master_port is not None:
        _whole(spec.master_port, "master_port", 1, 65535, "a TCP port")
    if spec.nodes:
        _check_nodes(spec.nodes, "nodes")
    names = [r.name for r in spec.roles]
    for i, r in enumerate(spec.roles):
        field = f"roles[{i}]"
        if not _NAME_RE.match(r.name):
            _bad(f"{field}.name {r.name!r} is not a role name: 1-64 letters, digits, '.', '_' or '-'", f"{field}.name")
        if r.name in names[:i]:
            _bad(f"role {r.name!r} is given twice; give each role once with all its nodes", f"{field}.name")
        _check_nodes(r.nodes, f"{field}.nodes")
        if r.ranks_per_node is not None:
            _whole(r.ranks_per_node, f"{field}.ranks_per_node", 1, MAX_RANKS_PER_NODE, "ranks per node")
            if spec.per_gpu:
                _bad(f"role {r.name!r} sets its ranks per node, but per_gpu (--per-gpu) derives them from the "
                     "GPUs; drop one of the two", f"{field}.ranks_per_node")
        if r.gpus_per_rank is not None:
            _whole(r.gpus_per_rank, f"{field}.gpus_per_rank", 0, MAX_GPUS_PER_RANK, "GPUs per rank")
        if not (r.argv or spec.argv):
            _bad(f"role {r.name!r} has no command; give one after -- (or argv in the spec)", f"{field}.argv")
    if not spec.roles and not spec.argv:
        _bad("the group has no command; give it after --, e.g. agentctl submit --nodes a,b -- python train.py",
             "argv")
    if not spec.per_gpu:
        world = sum(len(r.nodes) * (r.ranks_per_node or 1) for r in spec.effective_roles())
        if world > MAX_WORLD_SIZE:
            _bad(f"the group would have {world} ranks, more than {MAX_WORLD_SIZE}; use fewer nodes or ranks per node",
                 "ranks_per_node")
    return spec


def spec_from_dict(data: Mapping[str, Any]) -> GroupSpec:
    """A checked GroupSpec from a dict (a parsed TOML/JSON file). Raises GroupSpecError."""
    if not isinstance(data, Mapping):
        _bad(f"a group spec must be a table/object, not {type(data).__name__}", "")
    fixed = dict(data)
    if isinstance(fixed.get("nodes"), str):
        fixed["nodes"] = [n for n in fixed["nodes"].split(",") if n]
    if isinstance(fixed.get("argv"), str):
        _bad("argv must be a list of strings, e.g. argv = [\"python\", \"train.py\"]", "argv")
    roles = fixed.get("roles")
    if isinstance(roles, Mapping):  # [roles.trainer] tables: the key is the name
        fixed["roles"] = [{"name": k, **v} if isinstance(v, Mapping) else v for k, v in roles.items()]
    try:
        spec = msgspec.convert(fixed, GroupSpec, strict=True)
    except msgspec.ValidationError as e:
        text = str(e)
        where = re.search(r"at `\$\.?([^`]*)`", text)
        named = re.search(r"(?:unknown|required) field `([^`]+)`", text)
        field = (where.group(1) if where else "") or (named.group(1) if named else "")
        if named and where and where.group(1):
            field = f"{where.group(1)}.{named.group(1)}"
        _bad(f"group spec: {text}; see docs/groups.md for the fields", field)
    return check(spec)


def load_spec(path: str | Path) -> GroupSpec:
    """Read a group spec file (``.toml``, else JSON). Raises GroupSpecError."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        _bad(f"cannot read group spec {str(p)!r}: {e.strerror}; check the path", "spec")
    try:
        data = tomllib.loads(raw.decode()) if p.suffix.lower() == ".toml" else json.loads(raw)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        _bad(f"group spec {str(p)!r} is not valid {p.suffix.lstrip('.') or 'JSON'}: {e}", "spec")
    return spec_from_dict(data)


def parse_role(text: str) -> RoleSpec:
    """``NAME:NODES[:RANKS]`` (NODES comma-separated) as a RoleSpec. Raises GroupSpecError."""
    form = "write NAME:NODES[:RANKS], e.g. --role trainer:gpu-a,gpu-b:8"
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        _bad(f"role {text!r} is not NAME:NODES[:RANKS]; {form}", "roles")
    ranks: int | None = None
    if len(parts) == 3:
        try:
            ranks = int(parts[2])
        except ValueError:
            _bad(f"role {text!r}: RANKS {parts[2]!r} is not a whole number; {form}", "roles")
    return RoleSpec(name=parts[0], nodes=[n.strip() for n in parts[1].split(",") if n.strip()], ranks_per_node=ranks)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise GroupSpecError(f"agentctl submit: {message}; see agentctl submit --help", "argv")


def add_group_arguments(p: argparse.ArgumentParser) -> None:
    """The group flags of ``agentctl submit`` (for the CLI to add to its submit parser)."""
    p.add_argument("--nodes", help="comma-separated nodes; one rank per node unless --ranks-per-node/--per-gpu")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--ranks-per-node", type=int, help="ranks on each node (default 1)")
    how.add_argument("--per-gpu", action="store_true", default=None, help="one rank per GPU (per --gpus-per-rank GPUs)")
    p.add_argument("--gpus-per-rank", type=int, help="GPUs each rank gets (default 0)")
    p.add_argument("--name", help="the group's name")
    p.add_argument("--role", action="append", default=[], metavar="NAME:NODES[:RANKS]",
                   help="a role on its nodes (repeatable); each rank sees FLEETDECK_ROLE")
    p.add_argument("--master-port", type=int, help="rank 0's rendezvous port (default: a free port)")
    p.add_argument("--spec", help="a group spec file (TOML or JSON); flags override its values")


def spec_from_namespace(ns: argparse.Namespace, command: Sequence[str]) -> GroupSpec:
    """Merge ``--spec`` with the flags (flags win) into one checked GroupSpec."""
    data: dict[str, Any] = {}
    if ns.spec:
        data = msgspec.to_builtins(load_spec(ns.spec))
    overrides = {"nodes": [n for n in ns.nodes.split(",") if n] if ns.nodes is not None else None,
                 "ranks_per_node": ns.ranks_per_node, "per_gpu": ns.per_gpu, "gpus_per_rank": ns.gpus_per_rank,
                 "name": ns.name, "master_port": ns.master_port}
    data.update({k: v for k, v in overrides.items() if v is not None})
    if ns.role:
        data["roles"] = [msgspec.to_builtins(parse_role(r)) for r in ns.role]
        if ns.nodes is None:
            data.pop("nodes", None)
    elif ns.nodes is not None:
        data.pop("roles", None)
    if command:
        data["argv"] = list(command)
    return spec_from_dict(data)


def parse_submit_args(argv: Sequence[str]) -> GroupSpec:
    """``--nodes a,b [...] -- CMD...`` as one checked GroupSpec. Raises GroupSpecError."""
    args = list(argv)
    command: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, command = args[:cut], args[cut + 1:]
    p = _Parser(prog="agentctl submit", add_help=False)
    add_group_arguments(p)
    return spec_from_namespace(p.parse_args(args), command)
