"""Moving a whole group to another node set (``agentctl migrate GROUP --nodes x,y``).

A group moves rank by rank with the one-job migration (checkpoint, transfer, commit: never two
copies of a rank), each rank carrying a :class:`~agentd.protocol.messages.Regroup`: its place on
the new node set and the rendezvous variables that change with it. On the target a moved rank is
a queued group member like a freshly submitted one, so the new leader (the new node of node rank
0) admits the whole group at once and every rank resumes from its checkpoint.

Two halves, both pure: :func:`plan_move` (the client: which rank goes where, with what) and
:func:`moved_spec` (the source daemon: apply a Regroup to a rank's spec, refusing anything that
is not a move of the same rank of the same group).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from agentd.groups.ranks import ENV_GROUP, ENV_ROLE
from agentd.protocol.jobs import JobInfo, JobSpec
from agentd.protocol.messages import Regroup

# What a move may change in a rank's environment: where the rendezvous is and where the rank
# sits. Everything else (the program, its user, its own variables) travels as it is.
REGROUP_ENV_KEYS = frozenset({
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "GROUP_RANK",
    "MASTER_ADDR", "MASTER_PORT", "ROLE_RANK", "ROLE_WORLD_SIZE", ENV_GROUP, ENV_ROLE,
})


class RegroupError(ValueError):
    """A move that is not one; ``message`` names the rank and what is wrong."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def moved_spec(job_id: str, spec: JobSpec, regroup: Regroup) -> JobSpec:
    """``spec`` of rank ``job_id`` as it runs on its new node (RegroupError if not a plain move)."""
    old, new = spec.group, regroup.member
    if old is None:
        raise RegroupError(f"job {job_id} is not a rank of a group; migrate it without a group move")
    same = (old.id, old.rank, old.world_size, old.role) == (new.id, new.rank, new.world_size, new.role)
    if not same:
        raise RegroupError(f"job {job_id} is rank {old.rank} of {old.world_size} ({old.role or 'no role'}) of "
                           f"group {old.id}; a move keeps group, rank, world size and role (asked: rank "
                           f"{new.rank} of {new.world_size} of {new.id})")
    if not new.leader or new.node_rank >= len(new.nodes):
        raise RegroupError(f"the move of job {job_id} names no leader or no node for node rank {new.node_rank}")
    extra = sorted(set(regroup.env) - REGROUP_ENV_KEYS)
    if extra:
        raise RegroupError(f"a group move changes only the rendezvous variables; it may not set {', '.join(extra)} "
                           f"(job {job_id})")
    return msgspec.structs.replace(spec, group=new, env={**spec.env, **regroup.env})


class Placement(msgspec.Struct, frozen=True, kw_only=True):
    """Where one rank goes: ``target`` (a request endpoint) with ``regroup``."""

    job_id: str
    source_node: str
    target_name: str
    target: str
    regroup: Regroup


def plan_move(group_id: str, ranks: Sequence[JobInfo], nodes: Sequence[tuple[str, str]],
              master_addr: str, master_port: int, keys: Sequence[str] = ()) -> list[Placement]:
    """Each rank's placement on ``nodes`` ((name, request endpoint) in node-rank order): the
    ranks of old node rank k go to ``nodes[k]``, keeping their local ranks; the rendezvous moves
    to ``master_addr:master_port`` (a free port on the new node rank 0); ``keys`` are the new
    nodes' CURVE server keys in the same order (z85 text, "" for none). RegroupError when the
    node count differs, a rank is missing or a rank would stay where it is."""
    members = [j for j in ranks if j.spec.group is not None and j.spec.group.id == group_id]
    if not members:
        raise RegroupError(f"group {group_id} has no ranks to move")
    first = members[0].spec.group
    assert first is not None
    world = first.world_size
    if sorted(j.spec.group.rank for j in members if j.spec.group) != list(range(world)):
        raise RegroupError(f"group {group_id} has {len(members)} of its {world} ranks active; a group moves whole "
                           "(see `agentctl show " + group_id + "`)")
    old_nodes = len(first.nodes) or 1 + max(j.spec.group.node_rank for j in members if j.spec.group)
    if len(nodes) != old_nodes:
        raise RegroupError(f"group {group_id} runs on {old_nodes} node(s); name as many new nodes "
                           f"(got {len(nodes)}: {', '.join(n for n, _ in nodes)})")
    endpoints = [ep for _, ep in nodes]
    out = []
    for j in sorted(members, key=lambda j: j.spec.group.rank if j.spec.group else 0):
        g = j.spec.group
        assert g is not None
        name, endpoint = nodes[g.node_rank]
        if name == j.node:
            raise RegroupError(f"rank {g.rank} ({j.id}) already runs on node {name}; a group moves to other nodes "
                               "(each node rank must move to another node)")
        member = msgspec.structs.replace(g, leader=endpoints[0], nodes=endpoints, gpu_indexes=[],
                                         node_keys=list(keys) if any(keys) else [])
        # A rank keeps its place (rank, node rank, local rank): only the rendezvous moves. (The
        # other variables are not ours to copy anyway: a listing shows env names, not values.)
        env = {"MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port)}
        out.append(Placement(job_id=j.id, source_node=j.node, target_name=name, target=endpoint,
                             regroup=Regroup(member=member, env=env)))
    return out
