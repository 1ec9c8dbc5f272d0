"""A group's ranks as each node's job specs: the one step agentctl and the app share.

Submitting a group (docs/groups.md) is: expand the spec over the nodes' GPUs
(:func:`agentd.groups.ranks.expand`), open the group on rank 0's node for an id and a port, then
submit every rank to its node. The middle of that, turning the rank assignments into the
``JobSpec`` each node is sent, lives here so the CLI (``agentctl submit --nodes``) and the app's
submit dialog build exactly the same ranks; both do their own network calls around it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec

from agentd.groups.ranks import RankAssignment, group_env
from agentd.groups.spec import GroupSpec
from agentd.protocol.jobs import CheckpointContract, GroupMember, JobSpec

RankFailurePolicy = Literal["cancel", "ignore"]


class RankLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The job fields every rank of a group takes as given (the defaults are JobSpec's)."""

    priority: int = 0
    cpus: float | None = None
    counters: list[str] = []
    labels: dict[str, str] = {}
    # Every rank keeps the same contract: a group moves (migrate GROUP --nodes) only with one.
    checkpoint: CheckpointContract | None = None


def group_name(spec: GroupSpec, group_id: str) -> str:
    """The group's name: the spec's, else the id's counter part (``run-7``)."""
    return spec.name or group_id.rsplit(".", 1)[-1]


def rank_specs(spec: GroupSpec, ranks: Sequence[RankAssignment], group_id: str, master_addr: str,
               master_port: int, endpoints: Mapping[str, str], *,
               on_rank_failure: RankFailurePolicy = "cancel",
               limits: RankLimits | None = None,
               keys: Mapping[str, str] | None = None) -> dict[str, list[JobSpec]]:
    """Each node's ranks as JobSpecs, nodes in the spec's order (rank 0's node first).

    ``endpoints`` maps every node of the spec to its request endpoint as the other nodes reach
    it: rank 0's is the gang leader, and all of them, by node rank, are the group's nodes.
    ``master_port`` is the rendezvous port (the spec's own, or the one ``group_open`` chose).
    ``keys`` maps a node to its CURVE server key (40 Z85 characters; absent: no CURVE), which
    the leader and the radar need to reach that node's daemon off loopback.
    Raises KeyError naming a node of the spec that has no endpoint.
    """
    order = spec.node_order()
    missing = [n for n in order if n not in endpoints]
    if missing:
        raise KeyError(f"node {missing[0]!r} of group {group_id} has no endpoint")
    lim = limits or RankLimits()
    envs = group_env(group_id, ranks, master_addr, master_port, spec.env)
    nodes = [endpoints[n] for n in order]
    node_keys = [(keys or {}).get(n, "") for n in order]
    per_node = {n: sum(1 for a in ranks if a.node == n) for n in order}
    name = group_name(spec, group_id)
    out: dict[str, list[JobSpec]] = {n: [] for n in order}
    for a in ranks:
        env = dict(envs[a.rank])
        env.pop("CUDA_VISIBLE_DEVICES", None)  # the node sets it from the GPUs it gives the rank
        member = GroupMember(id=group_id, rank=a.rank, world_size=len(ranks), role=a.role, node_rank=a.node_rank,
                             local_rank=a.local_rank, local_world_size=per_node[a.node], leader=nodes[0],
                             nodes=nodes, node_keys=node_keys if any(node_keys) else [],
                             on_rank_failure=on_rank_failure)
        out[a.node].append(JobSpec(argv=a.argv, name=f"{name}-r{a.rank}", cwd=spec.cwd, env=env, gpus=len(a.gpus),
                                   group=member, priority=lim.priority, cpus=lim.cpus, counters=list(lim.counters),
                                   labels=dict(lim.labels), checkpoint=lim.checkpoint))
    return out
