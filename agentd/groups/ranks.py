"""A group spec + the nodes' GPUs -> rank assignments and each rank's environment (pure functions).

Order (what torchrun users expect): nodes are numbered by first appearance (roles in order, nodes
in order within a role): that is NODE_RANK, and rank 0 is on node 0. Ranks are numbered role by
role, node by node, so within one role a node's ranks are contiguous (rank = first rank of the
node + local rank, as torchrun numbers them). Local ranks count every rank of the group on that
node (two roles sharing a node share its local ranks 0..K-1), and GPUs on a node are handed out
in the order offered, each to one rank.

Group ids: ``NODE.run-N``, N from the submitting daemon's own counter (kept in its store). The
node part makes the id unique across the cluster without any coordination, since node names
are; it has the same shape as job ids (``gpu-a.42``), so ``agentctl --cluster FILE pause
gpu-a.run-7`` finds the owning daemon the same way and ``run-7`` is the shorthand when one node is
addressed. A random suffix would need no counter, but could collide and says nothing to a reader.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import msgspec

from agentd.groups.spec import MAX_WORLD_SIZE, GroupSpec, GroupSpecError, check
from agentd.protocol.jobs import GroupMember

ENV_ROLE = "FLEETDECK_ROLE"
ENV_GROUP = "FLEETDECK_GROUP"
_GROUP_ID_RE = re.compile(r"^(?P<node>.+)\.run-(?P<n>[0-9]+)$")


class RankAssignment(msgspec.Struct, frozen=True, kw_only=True):
    """Where one rank runs and what it gets."""

    rank: int
    node: str
    node_rank: int
    local_rank: int
    local_world_size: int
    role: str
    gpus: list[int]
    argv: list[str]


def make_group_id(node: str, counter: int) -> str:
    """``gpu-a.run-7``: the submitting node's name and its own counter (see the module docstring)."""
    if counter < 1:
        raise ValueError(f"group counter {counter} must be at least 1")
    return f"{node}.run-{counter}"


def parse_group_id(text: str) -> tuple[str, int] | None:
    """(node, counter) of ``NODE.run-N``, or None when ``text`` is not a group id."""
    m = _GROUP_ID_RE.match(text)
    return (m.group("node"), int(m.group("n"))) if m else None


def expand(spec: GroupSpec, gpus: Mapping[str, Sequence[int]]) -> list[RankAssignment]:
    """Every rank of ``spec``, sorted by rank; ``gpus`` are the GPU indexes offered on each node.

    Raises GroupSpecError naming the node when a node is unknown or has too few GPUs.
    """
    check(spec)
    roles = spec.effective_roles()
    order = spec.node_order()
    missing = [n for n in order if n not in gpus]
    if missing:
        raise GroupSpecError(f"node {missing[0]!r} is not known here (no inventory); check the name with "
                             "`agentctl nodes` or add the node to the cluster file", "nodes")
    # --per-gpu means at least one GPU per rank, whatever gpus_per_rank says
    per_rank = [max(r.gpus_per_rank or 0, 1) if spec.per_gpu else (r.gpus_per_rank or 0) for r in roles]
    counts: dict[tuple[int, str], int] = {}  # (role index, node) -> ranks
    for i, r in enumerate(roles):
        for node in r.nodes:
            if spec.per_gpu:
                k = len(gpus[node]) // per_rank[i]
                if k == 0:
                    raise GroupSpecError(f"node {node!r} offers {len(gpus[node])} GPUs, too few for one rank of "
                                         f"{per_rank[i]} GPU(s) with --per-gpu; drop the node or lower "
                                         "--gpus-per-rank", "per_gpu")
            else:
                k = r.ranks_per_node or 1
            counts[i, node] = k
    world = sum(counts.values())
    if world > MAX_WORLD_SIZE:
        raise GroupSpecError(f"the group would have {world} ranks, more than {MAX_WORLD_SIZE}", "ranks_per_node")
    per_node = {n: sum(k for (_, m), k in counts.items() if m == n) for n in order}
    need = {n: sum(k * per_rank[i] for (i, m), k in counts.items() if m == n) for n in order}
    for n in order:
        offered = list(gpus[n])
        if len(set(offered)) != len(offered):
            raise GroupSpecError(f"node {n!r}: GPU indexes {offered} list a GPU twice", "gpus")
        if need[n] > len(offered):
            raise GroupSpecError(f"node {n!r} needs {need[n]} GPUs for its {per_node[n]} rank(s) but offers "
                                 f"{len(offered)}; lower --gpus-per-rank or --ranks-per-node, or wait for GPUs "
                                 "to free", "gpus_per_rank")
    next_local = dict.fromkeys(order, 0)
    next_gpu = dict.fromkeys(order, 0)
    out: list[RankAssignment] = []
    for i, r in enumerate(roles):
        for node in r.nodes:
            for _ in range(counts[i, node]):
                g0 = next_gpu[node]
                out.append(RankAssignment(rank=len(out), node=node, node_rank=order.index(node),
                                          local_rank=next_local[node], local_world_size=per_node[node],
                                          role=r.name, gpus=list(gpus[node][g0:g0 + per_rank[i]]), argv=list(r.argv)))
                next_local[node] += 1
                next_gpu[node] += per_rank[i]
    return out


def rank_env(group_id: str, a: RankAssignment, world_size: int, master_addr: str, master_port: int,
             base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of one rank: ``base`` plus torchrun's variables and Fleetdeck's own.

    torchrun's: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, NODE_RANK, GROUP_RANK (= NODE_RANK),
    MASTER_ADDR, MASTER_PORT (:func:`group_env` adds ROLE_RANK/ROLE_WORLD_SIZE). Fleetdeck's:
    FLEETDECK_GROUP, FLEETDECK_ROLE and CUDA_VISIBLE_DEVICES (empty: no GPU).
    """
    env = dict(base or {})
    env.update({
        "RANK": str(a.rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(a.local_rank),
        "LOCAL_WORLD_SIZE": str(a.local_world_size), "NODE_RANK": str(a.node_rank), "GROUP_RANK": str(a.node_rank),
        "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port),
        ENV_GROUP: group_id, ENV_ROLE: a.role, "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in a.gpus),
    })
    return env


def role_ranks(ranks: Sequence[RankAssignment]) -> dict[int, tuple[int, int]]:
    """rank -> (rank within its role, ranks in its role): torchrun's ROLE_RANK and ROLE_WORLD_SIZE."""
    sizes = Counter(a.role for a in ranks)
    seen: Counter[str] = Counter()
    out: dict[int, tuple[int, int]] = {}
    for a in sorted(ranks, key=lambda a: a.rank):
        out[a.rank] = (seen[a.role], sizes[a.role])
        seen[a.role] += 1
    return out


def group_env(group_id: str, ranks: Sequence[RankAssignment], master_addr: str, master_port: int,
              base: Mapping[str, str] | None = None) -> dict[int, dict[str, str]]:
    """Every rank's environment (see :func:`rank_env`), with ROLE_RANK and ROLE_WORLD_SIZE."""
    roles = role_ranks(ranks)
    out = {}
    for a in ranks:
        env = rank_env(group_id, a, len(ranks), master_addr, master_port, base)
        env["ROLE_RANK"], env["ROLE_WORLD_SIZE"] = str(roles[a.rank][0]), str(roles[a.rank][1])
        out[a.rank] = env
    return out


class Peer(NamedTuple):
    """A node of a group as its daemon is reached: request endpoint and CURVE key ("": none)."""

    endpoint: str
    key: str


def group_peers(member: GroupMember) -> list[Peer]:
    """The group's nodes by node rank, each with the CURVE key its submitter gave ("": none)."""
    keys = list(member.node_keys) + [""] * (len(member.nodes) - len(member.node_keys))
    return [Peer(ep, key) for ep, key in zip(member.nodes, keys, strict=False)]
