"""Rank expansion and each rank's environment: torchrun's numbering, no GPU given twice."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentd.groups.ranks import expand, group_env, make_group_id, parse_group_id
from agentd.groups.spec import GroupSpec, GroupSpecError, RoleSpec, parse_submit_args


def test_torchrun_numbering_and_env():
    spec = parse_submit_args(["--nodes", "a,b", "--ranks-per-node", "2", "--gpus-per-rank", "2", "--", "python", "t.py"])
    ranks = expand(spec, {"a": [0, 1, 2, 3], "b": [4, 5, 6, 7]})
    assert [(a.rank, a.node, a.node_rank, a.local_rank, a.gpus) for a in ranks] == [
        (0, "a", 0, 0, [0, 1]), (1, "a", 0, 1, [2, 3]), (2, "b", 1, 0, [4, 5]), (3, "b", 1, 1, [6, 7])]
    env = group_env("a.run-3", ranks, "10.0.0.1", 29500, base={"PATH": "/usr/bin"})[2]
    assert env == {"PATH": "/usr/bin", "RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2",
                   "NODE_RANK": "1", "GROUP_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500",
                   "FLEETDECK_GROUP": "a.run-3", "FLEETDECK_ROLE": "", "CUDA_VISIBLE_DEVICES": "4,5",
                   "ROLE_RANK": "2", "ROLE_WORLD_SIZE": "4"}


def test_roles_sharing_a_node_share_its_local_ranks_and_gpus():
    spec = GroupSpec(argv=["x"], gpus_per_rank=1, roles=[RoleSpec(name="trainer", nodes=["a"], ranks_per_node=2),
                                                         RoleSpec(name="rollout", nodes=["a", "b"])])
    ranks = expand(spec, {"a": [0, 1, 2], "b": [0]})
    assert [(a.role, a.node, a.local_rank, a.local_world_size, a.gpus) for a in ranks] == [
        ("trainer", "a", 0, 3, [0]), ("trainer", "a", 1, 3, [1]), ("rollout", "a", 2, 3, [2]),
        ("rollout", "b", 0, 1, [0])]
    envs = group_env("a.run-1", ranks, "a", 1)
    assert [(e["FLEETDECK_ROLE"], e["ROLE_RANK"], e["ROLE_WORLD_SIZE"]) for e in envs.values()] == [
        ("trainer", "0", "2"), ("trainer", "1", "2"), ("rollout", "0", "2"), ("rollout", "1", "2")]


def test_per_gpu_takes_the_ranks_from_the_inventory():
    spec = parse_submit_args(["--nodes", "a,b", "--per-gpu", "--", "x"])
    ranks = expand(spec, {"a": [0, 1, 2, 3], "b": [0, 1]})
    assert [(a.node, a.gpus) for a in ranks] == [("a", [0]), ("a", [1]), ("a", [2]), ("a", [3]), ("b", [0]),
                                                 ("b", [1])]


@pytest.mark.parametrize(("argv", "gpus", "words"), [
    (["--nodes", "a,b", "--", "x"], {"a": []}, "node 'b' is not known"),
    (["--nodes", "a", "--ranks-per-node", "3", "--gpus-per-rank", "2", "--", "x"], {"a": [0, 1, 2, 3]},
     "needs 6 GPUs for its 3 rank(s) but offers 4"),
    (["--nodes", "a", "--per-gpu", "--gpus-per-rank", "2", "--", "x"], {"a": [0]}, "too few for one rank"),
    (["--nodes", "a", "--", "x"], {"a": [1, 1]}, "list a GPU twice"),
])
def test_inventory_problems_name_the_node(argv, gpus, words):
    with pytest.raises(GroupSpecError) as e:
        expand(parse_submit_args(argv), gpus)
    assert words in e.value.message


def test_group_ids_are_node_scoped():
    gid = make_group_id("gpu-a.lab", 7)
    assert gid == "gpu-a.lab.run-7" and parse_group_id(gid) == ("gpu-a.lab", 7)
    assert parse_group_id("gpu-a.42") is None and parse_group_id("run-7") is None
    with pytest.raises(ValueError):
        make_group_id("a", 0)


node_names = st.lists(st.sampled_from([f"n{i}" for i in range(8)]), min_size=1, max_size=5, unique=True)
roles = st.lists(st.tuples(node_names, st.integers(1, 4), st.integers(0, 2)), min_size=1, max_size=3)


@settings(max_examples=200, deadline=None)
@given(roles=roles, per_node_gpus=st.integers(0, 16), per_gpu=st.booleans())
def test_expansion_invariants(roles, per_node_gpus, per_gpu):
    spec = GroupSpec(argv=["x"], per_gpu=per_gpu, roles=[
        RoleSpec(name=f"r{i}", nodes=nodes, ranks_per_node=None if per_gpu else k, gpus_per_rank=g)
        for i, (nodes, k, g) in enumerate(roles)])
    inventory = {f"n{i}": list(range(10, 10 + per_node_gpus)) for i in range(8)}
    try:
        ranks = expand(spec, inventory)
    except GroupSpecError as e:  # only ever for too few GPUs, and then truly too few
        assert "GPU" in e.message
        return
    world = len(ranks)
    assert [a.rank for a in ranks] == list(range(world))  # ranks 0..W-1 exactly once
    assert ranks[0].node_rank == 0
    by_node: dict[str, list[int]] = {}
    for a in ranks:
        by_node.setdefault(a.node, []).append(a.local_rank)
        assert a.local_world_size == Counter(b.node for b in ranks)[a.node]
        assert spec.node_order()[a.node_rank] == a.node
    for locals_ in by_node.values():
        assert sorted(locals_) == list(range(len(locals_)))  # local ranks 0..K-1 on each node
    given_out = [(a.node, g) for a in ranks for g in a.gpus]
    assert len(given_out) == len(set(given_out))  # no GPU given twice
    assert all(g in inventory[n] for n, g in given_out)
    envs = group_env("n0.run-1", ranks, "n0", 29500)
    assert {e["RANK"] for e in envs.values()} == {str(r) for r in range(world)}
    assert all(e["WORLD_SIZE"] == str(world) for e in envs.values())


def test_docs_list_every_variable_a_rank_gets():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "groups.md").read_text()
    table = doc.split("| Variable | Value |")[1].split("\n\n")[0]
    documented = set(re.findall(r"`([A-Z_]+)`", table))
    spec = parse_submit_args(["--nodes", "a", "--", "x"])
    assert documented == set(group_env("a.run-1", expand(spec, {"a": []}), "a", 1)[0])
