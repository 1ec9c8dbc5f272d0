"""agentctl for groups (gang jobs): ``submit --nodes/--role``, group ids in pause, resume,
priority, cancel and show, and groups folded into one line in ``jobs`` (docs/groups.md).

Submitting: agentctl asks each node for its GPUs, expands the ranks (agentd.groups.ranks), asks
rank 0's node for a group id and a free rendezvous port (``group_open``), then submits every
node's ranks to that node *with the user's own identity* (a daemon never creates a job for a
user). The ranks wait there held for the gang until the leader (rank 0's daemon) starts them
all at once. Group control fans out to the group's nodes in parallel threads, one
``group_action`` per node.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec

from agentd.cli.common import (
    CliError,
    Target,
    call,
    cell,
    clean,
    connect,
    emit_json,
    int_in,
    key_text,
    targets,
)
from agentd.groups.gangview import GroupRow, group_rows, group_state, rank_of
from agentd.groups.ranks import ENV_GROUP, expand, parse_group_id
from agentd.groups.spec import GroupSpecError, spec_from_namespace
from agentd.groups.submitplan import RankLimits, rank_specs
from agentd.protocol import JobInfo
from agentd.protocol.gang import (
    GroupAction,
    GroupActionReply,
    GroupOpen,
    GroupOpenReply,
)
from agentd.protocol.jobs import CheckpointContract
from agentd.protocol.messages import (
    Cancel,
    JobReply,
    Jobs,
    JobsReply,
    Snapshot,
    SnapshotReply,
    Submit,
)

__all__ = ["act_on_nodes", "add_submit_flags", "find_members", "named_targets", "parallel", "group_action", "group_json", "group_rows", "is_group_id",
           "rank_of", "show_group", "submit_group", "wants_group"]

T = TypeVar("T")
MAX_MOVES_FOLLOWED = 16  # a group's rank 0 followed across this many moves at most


def add_submit_flags(p: argparse.ArgumentParser) -> None:
    """The group flags of ``agentctl submit`` (beside its job flags; --name and --spec are shared)."""
    p.add_argument("--nodes", metavar="A,B,...", help="a group: one rank per node (see --ranks-per-node, --per-gpu); "
                   "names from --cluster")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--ranks-per-node", type=int_in(1, 1024, "--ranks-per-node"), metavar="K",
                     help="ranks of the group on each node (default 1)")
    how.add_argument("--per-gpu", action="store_true", default=None, help="one rank per --gpus-per-rank GPUs of each node")
    p.add_argument("--gpus-per-rank", type=int_in(0, 64, "--gpus-per-rank"), metavar="G", help="GPUs each rank gets (default 0)")
    p.add_argument("--role", action="append", default=[], metavar="NAME:NODES[:RANKS]",
                   help="a role of the group on its nodes (repeatable); each rank sees FLEETDECK_ROLE")
    p.add_argument("--master-port", type=int_in(1, 65535, "--master-port"), metavar="P",
                   help="rank 0's rendezvous port (default: a free port chosen by rank 0's node)")
    p.add_argument("--on-rank-failure", choices=["cancel", "ignore"], default="cancel",
                   help="when a rank fails: cancel the others and fail the group (default), or let them run")


def wants_group(args: argparse.Namespace) -> bool:
    """Is this submit a group (--nodes, --role, or a --spec file with nodes or roles)?"""
    if args.nodes or args.role:
        return True
    if not args.spec:
        return False
    path = Path(args.spec)
    try:
        data = json.loads(path.read_text()) if path.suffix == ".json" else tomllib.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False  # the job path reports what is wrong with the file
    return isinstance(data, dict) and ("nodes" in data or "roles" in data)


def is_group_id(text: str) -> bool:
    return parse_group_id(text) is not None


def parallel(fns: Sequence[Callable[[], T]]) -> list[T | CliError]:
    """Run ``fns`` at once in threads; each result, or the CliError it raised."""
    def guard(fn: Callable[[], T]) -> T | CliError:
        try:
            return fn()
        except CliError as e:
            return e
    if not fns:
        return []
    with ThreadPoolExecutor(max_workers=min(32, len(fns))) as pool:
        return list(pool.map(guard, fns))


def named_targets(args: argparse.Namespace, nodes: Sequence[str]) -> dict[str, Target]:
    if not args.cluster:
        raise CliError("a group names its nodes; give --cluster FILE, which lists each node's endpoint", 2)
    known = {t.name: t for t in targets(argparse.Namespace(**{**vars(args), "node": None}))}
    missing = [n for n in nodes if n not in known]
    if missing:
        raise CliError(f"node {missing[0]!r} is not in {args.cluster}; it lists: {', '.join(known)}", 2)
    return {n: known[n] for n in nodes}


def _gpus_of(args: argparse.Namespace, t: Target) -> list[int]:
    with connect(args, t) as c:
        reply = call(c, Snapshot(history=0))
    assert isinstance(reply, SnapshotReply)
    return [g.index for g in reply.inventory.gpus]


def submit_group(args: argparse.Namespace, command: list[str], base_env: dict[str, str]) -> int:
    """``agentctl submit --nodes ...``: the whole flow of the module docstring."""
    try:
        spec = spec_from_namespace(args, command)
    except GroupSpecError as e:
        raise CliError(e.message, 2) from None
    if base_env:
        spec = msgspec.structs.replace(spec, env={**spec.env, **base_env})
    order = spec.node_order()
    nodes = named_targets(args, order)
    offered = parallel([lambda t=nodes[n]: _gpus_of(args, t) for n in order])  # type: ignore[misc]
    gpus: dict[str, list[int]] = {}
    for n, got in zip(order, offered, strict=True):
        if isinstance(got, CliError):
            raise CliError(f"node {n}: {got}", got.code)
        gpus[n] = got
    try:
        ranks = expand(spec, gpus)
    except GroupSpecError as e:
        raise CliError(e.message, 1) from None
    limits = _rank_limits(args)  # a bad flag is refused before a group id is spent
    leader = nodes[order[0]]
    with connect(args, leader) as c:
        opened = call(c, GroupOpen())
    assert isinstance(opened, GroupOpenReply)
    gid = opened.group_id
    port = spec.master_port or opened.master_port
    addr = urlsplit(leader.endpoint).hostname or "127.0.0.1"
    endpoints = {n: nodes[n].endpoint for n in order}
    specs = rank_specs(spec, ranks, gid, addr, port, endpoints, on_rank_failure=args.on_rank_failure,
                       limits=limits, keys={n: key_text(nodes[n]) for n in order})

    def submit_node(n: str) -> list[JobInfo]:
        done: list[JobInfo] = []
        with connect(args, nodes[n]) as c:
            for s in specs[n]:
                try:
                    reply = call(c, Submit(spec=s))
                except CliError as e:
                    raise CliError(f"node {n}, rank {s.group.rank if s.group else '?'}: {e}", e.code) from None
                assert isinstance(reply, JobReply)
                done.append(reply.job)
        return done

    results = parallel([lambda n=n: submit_node(n) for n in order])  # type: ignore[misc]
    failed = [r for r in results if isinstance(r, CliError)]
    if failed:  # never leave half a group queued: cancel what was submitted
        for n, r in zip(order, results, strict=True):
            if not isinstance(r, CliError):
                with connect(args, nodes[n]) as c:
                    for j in r:
                        try:
                            call(c, Cancel(job=j.id, grace_s=0))
                        except CliError:
                            pass
        raise CliError(f"group {gid} was not submitted (the ranks that were are cancelled): {failed[0]}", failed[0].code)
    jobs = [j for r in results if not isinstance(r, CliError) for j in r]
    if args.json:
        emit_json({"group": gid, "master_addr": addr, "master_port": port,
                   "ranks": [{"rank": rank_of(j), "id": j.id, "node": j.node} for j in sorted(jobs, key=rank_of)]})
    else:
        print(gid)
        print(f"{len(jobs)} ranks on {len(order)} nodes, rendezvous {addr}:{port}; they start together "
              "when every node has room", file=sys.stderr)
    return 0


def _rank_limits(args: argparse.Namespace) -> RankLimits:
    """The job flags every rank takes as they are: priority, CPU limit, counters, labels, checkpoint."""
    extra: dict[str, Any] = {}
    if getattr(args, "priority", None) is not None:
        extra["priority"] = args.priority
    if getattr(args, "cpus", None) is not None:
        extra["cpus"] = args.cpus
    if getattr(args, "counter", None):
        extra["counters"] = list(args.counter)
    labels = dict(item.split("=", 1) for item in getattr(args, "label", []) if "=" in item)
    if labels:
        extra["labels"] = labels
    if getattr(args, "checkpoint_signal", None) or getattr(args, "checkpoint_timeout", None):
        contract: dict[str, Any] = {}
        if args.checkpoint_signal:
            contract["signal"] = args.checkpoint_signal
        if args.checkpoint_timeout:
            contract["timeout_s"] = args.checkpoint_timeout
        try:
            extra["checkpoint"] = msgspec.convert(contract, CheckpointContract)
        except msgspec.ValidationError as e:
            raise CliError(f"--checkpoint-signal/--checkpoint-timeout: {e}", 2) from None
    return RankLimits(**extra)


# ---- finding a group's ranks -----------------------------------------------------------------

def _jobs_at(args: argparse.Namespace, t: Target) -> list[JobInfo]:
    with connect(args, t) as c:
        reply = call(c, Jobs())
    assert isinstance(reply, JobsReply)
    return reply.jobs


def find_members(args: argparse.Namespace, group_id: str) -> list[tuple[Target, list[JobInfo]]]:
    """The group's nodes and each one's ranks of the group (asks the leader which nodes)."""
    parsed = parse_group_id(group_id)
    if parsed is None:
        raise CliError(f"{group_id!r} is not a group id (NODE.run-N); see `agentctl jobs`", 2)
    leader_name = parsed[0]
    ts = targets(args)
    leader = next((t for t in ts if t.name == leader_name), None)
    if leader is None:
        for t in ts:  # endpoints given without names: the one whose jobs hold the group's rank 0
            try:
                if any(j.spec.group and j.spec.group.id == group_id for j in _jobs_at(args, t)):
                    leader = t
                    break
            except CliError:
                continue
    if leader is None:
        raise CliError(f"no node named {leader_name!r} (group {group_id}'s rank 0) among the given nodes; pass "
                       "--cluster FILE or --node ENDPOINT", 2)
    rank0 = _rank0(args, ts, leader, group_id)
    if rank0 is None or rank0.spec.group is None:
        raise CliError(f"group {group_id} is not known on node {leader_name} (its rank 0 may have aged out)", 1)
    keys = {t.endpoint: t.server_key for t in ts}
    nodes = [Target("", ep, keys.get(ep, "")) for ep in rank0.spec.group.nodes] or [leader]
    found = parallel([lambda t=t: _jobs_at(args, t) for t in nodes])  # type: ignore[misc]
    out = []
    for t, got in zip(nodes, found, strict=True):
        if isinstance(got, CliError):
            raise CliError(f"group {group_id}: node {t.endpoint}: {got}", got.code)
        out.append((t, sorted([j for j in got if j.spec.group and j.spec.group.id == group_id], key=rank_of)))
    return out


def _rank0(args: argparse.Namespace, ts: list[Target], leader: Target, group_id: str) -> JobInfo | None:
    """The group's rank 0 where it runs now: on the node the id names, or, after the group
    moved (``migrate GROUP --nodes``), on the node its rank 0 migrated to (followed by name)."""
    t = leader
    for _ in range(MAX_MOVES_FOLLOWED):
        found = [j for j in _jobs_at(args, t) if j.spec.group and j.spec.group.id == group_id and j.spec.group.rank == 0]
        here = next((j for j in found if j.state != "migrated"), None)
        moved = next((j for j in reversed(found) if j.migrated_to), None)
        if here is not None or moved is None or moved.migrated_to is None:
            return here
        node = moved.migrated_to.rpartition(".")[0]
        nxt = next((x for x in ts if x.name == node), None)
        if nxt is None:
            raise CliError(f"group {group_id} moved to node {node!r}, which is not among the given nodes; pass "
                           "--cluster FILE", 2)
        t = nxt
    return None


def group_action(args: argparse.Namespace, group_id: str, action: str, *, priority: int = 0,
                 grace_s: float = 10.0) -> int:
    """pause/resume/priority/cancel every rank of a group, one request per node, all at once."""
    members = find_members(args, group_id)
    req = GroupAction(group=group_id, action=action, priority=priority, grace_s=grace_s)  # type: ignore[arg-type]
    ok, errors = act_on_nodes(args, [t for t, _ in members], req)
    jobs = sorted([j for r in ok for j in r.jobs], key=rank_of)
    done = {k: v for r in ok for k, v in r.done_wall_s.items()}
    skew = max(done.values()) - min(done.values()) if len(done) > 1 else 0.0
    notes = [r.message for r in ok if r.message] + [str(e) for e in errors]
    if args.json:
        emit_json({"group": group_id, "action": action, "state": group_state(jobs), "done_wall_s": done,
                   "skew_s": skew, "ranks": [{"rank": rank_of(j), "id": j.id, "node": j.node, "state": j.state}
                                             for j in jobs], "errors": notes})
    else:
        print(clean(f"{group_id}  {group_state(jobs)}  ({len(done)} of {len(jobs)} ranks: {action})"))
        if action == "pause" and len(done) > 1:
            print(f"ranks frozen within {skew * 1000:.0f} ms of each other")
        for n in notes:
            print(f"agentctl: {clean(n)}", file=sys.stderr)
    return 1 if errors or (notes and not done) else 0


def act_on_nodes(args: argparse.Namespace, nodes: Sequence[Target],
                 req: GroupAction) -> tuple[list[GroupActionReply], list[CliError]]:
    """``req`` to every node at once: the replies, and the errors of the nodes that failed."""
    def act(t: Target) -> GroupActionReply:
        with connect(args, t) as c:
            reply = call(c, req)
        assert isinstance(reply, GroupActionReply)
        return reply

    replies = parallel([lambda t=t: act(t) for t in nodes])  # type: ignore[misc]
    return ([r for r in replies if not isinstance(r, CliError)], [r for r in replies if isinstance(r, CliError)])


# ---- showing groups ----------------------------------------------------------------------------

def group_json(row: GroupRow, ranks: list[JobInfo], job_json: Callable[[JobInfo], dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(row)
    out["kind"] = "group"
    out["rank_jobs"] = [{"rank": rank_of(j), **job_json(j)} for j in ranks]
    return out


def show_group(args: argparse.Namespace, group_id: str, job_json: Callable[[JobInfo], dict[str, Any]]) -> int:
    members = find_members(args, group_id)
    ranks = sorted([j for _, js in members for j in js], key=rank_of)
    rows, _ = group_rows(ranks)
    if not rows:
        raise CliError(f"group {group_id} has no ranks on its nodes (they may have aged out)", 1)
    row = rows[0]
    if args.json:
        emit_json(group_json(row, ranks, job_json))
        return 0
    for k, v in (("group", row.id), ("name", row.name), ("state", row.state + (" (mixed)" if row.partial else "")),
                 ("reason", row.reason), ("ranks", f"{row.ranks} of {row.world_size}"), ("nodes", ", ".join(row.nodes)),
                 ("gpus", row.gpus), ("rendezvous", _rendezvous(ranks))):
        if v not in ("", None):
            print(clean(f"{k:>16}: {v}"))
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("RANK", "ROLE", "JOB", "NODE", "STATE", "GPUS", "PID", "REASON"):
        table.add_column(col)
    for j in ranks:
        g = j.spec.group
        table.add_row(str(rank_of(j)), cell(g.role if g else ""), cell(j.id), cell(j.node), cell(j.state),
                      ",".join(map(str, j.gpus)) or "—", str(j.pid or ""), cell(j.reason))
    Console().print(table)
    return 0


def _rendezvous(ranks: list[JobInfo]) -> str:
    env = ranks[0].spec.env if ranks else {}
    if env.get("MASTER_ADDR") and env.get("MASTER_PORT"):
        return f"{env['MASTER_ADDR']}:{env['MASTER_PORT']} ({ENV_GROUP}={env.get(ENV_GROUP, '')})"
    return ""

