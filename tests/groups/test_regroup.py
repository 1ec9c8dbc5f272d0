"""The pure halves of a group move: planning placements, and the source daemon's check that a
regroup is a move of the same rank (a client cannot use it to change what a rank runs)."""

from __future__ import annotations

import msgspec
import pytest

from agentd.groups.regroup import RegroupError, moved_spec, plan_move
from agentd.protocol.jobs import GroupMember, JobInfo, JobSpec
from agentd.protocol.messages import Regroup

OLD = ["tcp://10.0.0.1:7710", "tcp://10.0.0.2:7710"]


def rank(r: int, node_rank: int, node: str) -> JobInfo:
    member = GroupMember(id="a.run-1", rank=r, world_size=4, node_rank=node_rank, local_rank=r % 2,
                         local_world_size=2, leader=OLD[0], nodes=OLD, gpu_indexes=[r % 2])
    env = {"RANK": str(r), "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500", "NODE_RANK": str(node_rank),
           "MY_OWN": "kept", "FLEETDECK_GROUP": "a.run-1"}
    return JobInfo(id=f"{node}.{r + 1}", node=node, name=f"r{r}", state="running",
                   spec=JobSpec(argv=["python", "train.py"], env=env, gpus=1, group=member))


RANKS = [rank(0, 0, "a"), rank(1, 0, "a"), rank(2, 1, "b"), rank(3, 1, "b")]
NEW = [("c", "tcp://10.0.0.3:7710"), ("d", "tcp://10.0.0.4:7710")]


def test_plan_sends_each_node_ranks_to_the_same_node_rank_with_the_new_rendezvous():
    plan = plan_move("a.run-1", RANKS, NEW, "10.0.0.3", 40001)
    assert [(p.job_id, p.target_name) for p in plan] == [("a.1", "c"), ("a.2", "c"), ("b.3", "d"), ("b.4", "d")]
    for p, j in zip(plan, RANKS, strict=True):
        m = p.regroup.member
        assert (m.rank, m.node_rank, m.local_rank, m.world_size) == (j.spec.group.rank, j.spec.group.node_rank,
                                                                    j.spec.group.local_rank, 4)
        assert m.leader == NEW[0][1] and m.nodes == [ep for _, ep in NEW] and m.gpu_indexes == []
        # Only the rendezvous travels: a listing shows env names without values, so copying
        # any other variable from it would blank it on the new node.
        assert p.regroup.env == {"MASTER_ADDR": "10.0.0.3", "MASTER_PORT": "40001"}
    spec = moved_spec("a.1", RANKS[0].spec, plan[0].regroup)
    assert spec.env["MY_OWN"] == "kept" and spec.env["RANK"] == "0" and spec.env["MASTER_ADDR"] == "10.0.0.3"
    assert spec.argv == ["python", "train.py"]
    assert spec.group.leader == NEW[0][1]
    assert spec.group.node_keys == []  # no keys given (loopback): none travel


def test_the_new_nodes_keys_travel_with_the_move():
    keys = ["K" * 40, ""]
    plan = plan_move("a.run-1", RANKS, NEW, "10.0.0.3", 40001, keys=keys)
    assert all(p.regroup.member.node_keys == keys for p in plan)


@pytest.mark.parametrize("nodes, ranks, fragment", [
    (NEW[:1], RANKS, "runs on 2 node(s)"),
    (NEW, RANKS[:3], "3 of its 4 ranks"),
    ([("a", "tcp://10.0.0.1:7710"), NEW[1]], RANKS, "already runs on node a"),
])
def test_plan_refuses_what_is_not_a_whole_move(nodes, ranks, fragment):
    with pytest.raises(RegroupError) as e:
        plan_move("a.run-1", ranks, nodes, "10.0.0.3", 1)
    assert fragment in e.value.message


def test_the_source_refuses_a_regroup_that_changes_the_rank_or_its_program():
    good = plan_move("a.run-1", RANKS, NEW, "10.0.0.3", 40001)[0].regroup
    other_rank = Regroup(member=msgspec.structs.replace(good.member, rank=2), env=good.env)
    with pytest.raises(RegroupError, match="keeps group, rank"):
        moved_spec("a.1", RANKS[0].spec, other_rank)
    with pytest.raises(RegroupError, match="LD_PRELOAD"):
        moved_spec("a.1", RANKS[0].spec, Regroup(member=good.member, env={"LD_PRELOAD": "/tmp/evil.so"}))
    with pytest.raises(RegroupError, match="not a rank of a group"):
        moved_spec("x.1", JobSpec(argv=["true"]), good)
