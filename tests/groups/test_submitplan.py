"""The shared step of a group submit (agentd.groups.submitplan): rank assignments -> each node's
JobSpecs, as agentctl submit --nodes and the app's submit dialog both send them."""

from __future__ import annotations

import msgspec
import pytest

from agentd.groups.ranks import expand
from agentd.groups.spec import GroupSpec, RoleSpec
from agentd.groups.submitplan import RankLimits, group_name, rank_specs
from agentd.protocol.jobs import CheckpointContract, JobSpec
from agentd.protocol.messages import Submit

EPS = {"a": "tcp://10.0.0.1:7710", "b": "tcp://10.0.0.2:7710"}


def _plan(spec: GroupSpec, gpus: dict[str, list[int]], **kw) -> dict[str, list[JobSpec]]:
    return rank_specs(spec, expand(spec, gpus), "a.run-3", "10.0.0.1", 29500, EPS, **kw)


def test_each_node_gets_its_ranks_with_the_gang_fields_and_torchrun_env():
    spec = GroupSpec(argv=["python", "train.py"], nodes=["a", "b"], ranks_per_node=2, gpus_per_rank=1,
                     env={"HF_HOME": "/data"})
    out = _plan(spec, {"a": [0, 1], "b": [4, 5]})
    assert list(out) == ["a", "b"]  # rank 0's node first
    assert [s.group.rank for s in out["a"]] == [0, 1] and [s.group.rank for s in out["b"]] == [2, 3]
    r3 = out["b"][1]
    assert r3.name == "run-3-r3" and r3.argv == ["python", "train.py"] and r3.gpus == 1
    g = r3.group
    assert (g.id, g.world_size, g.node_rank, g.local_rank, g.local_world_size) == ("a.run-3", 4, 1, 1, 2)
    assert g.leader == EPS["a"] and g.nodes == [EPS["a"], EPS["b"]] and g.on_rank_failure == "cancel"
    assert r3.env["RANK"] == "3" and r3.env["MASTER_ADDR"] == "10.0.0.1" and r3.env["MASTER_PORT"] == "29500"
    assert r3.env["FLEETDECK_GROUP"] == "a.run-3" and r3.env["HF_HOME"] == "/data"
    # The node picks the GPUs when it admits the rank: a pinned CUDA_VISIBLE_DEVICES would be wrong.
    assert all("CUDA_VISIBLE_DEVICES" not in s.env for ss in out.values() for s in ss)


def test_limits_policy_and_name_reach_every_rank_and_the_specs_encode():
    spec = GroupSpec(argv=["x"], nodes=["a", "b"], name="ring")
    ck = CheckpointContract(signal="SIGUSR2", timeout_s=30.0)
    out = _plan(spec, {"a": [], "b": []}, on_rank_failure="ignore",
                limits=RankLimits(priority=5, cpus=1.5, counters=["tokens"], labels={"team": "rl"}, checkpoint=ck))
    ranks = [s for ss in out.values() for s in ss]
    assert [s.name for s in ranks] == ["ring-r0", "ring-r1"]
    for s in ranks:
        assert (s.priority, s.cpus, s.counters, s.labels, s.checkpoint) == (5, 1.5, ["tokens"], {"team": "rl"}, ck)
        assert s.group.on_rank_failure == "ignore" and s.gpus == 0
        # What goes on the wire decodes under the protocol's own constraints.
        assert msgspec.msgpack.decode(msgspec.msgpack.encode(s), type=JobSpec) == s
    assert group_name(spec, "a.run-3") == "ring" and group_name(GroupSpec(argv=["x"], nodes=["a"]), "a.run-3") == "run-3"


def test_roles_keep_their_own_argv_and_share_local_ranks_on_a_shared_node():
    spec = GroupSpec(argv=["python", "rl.py"], roles=[RoleSpec(name="trainer", nodes=["a"]),
                                                      RoleSpec(name="rollout", nodes=["a", "b"], argv=["python", "gen.py"])])
    out = _plan(spec, {"a": [], "b": []})
    a = out["a"]
    assert [(s.group.role, s.group.local_rank, s.group.local_world_size) for s in a] == [("trainer", 0, 2), ("rollout", 1, 2)]
    assert a[1].argv == ["python", "gen.py"] and a[0].argv == ["python", "rl.py"]
    assert out["b"][0].env["ROLE_RANK"] == "1" and out["b"][0].env["ROLE_WORLD_SIZE"] == "2"


def test_a_node_without_an_endpoint_is_named():
    spec = GroupSpec(argv=["x"], nodes=["a", "c"])
    with pytest.raises(KeyError, match="'c'"):
        rank_specs(spec, expand(spec, {"a": [], "c": []}), "a.run-1", "h", 1, EPS)


def test_each_rank_carries_the_nodes_curve_keys_by_node_rank_and_a_path_is_refused():
    """Off loopback the leader and the radar reach the other daemons with these keys; a daemon
    takes a key only as text (40 Z85 characters), never as a path to read on its side."""
    import zmq

    from agentd.groups.ranks import Peer, group_peers

    key_b = zmq.curve_keypair()[0].decode()
    spec = GroupSpec(argv=["x"], nodes=["a", "b"])
    out = _plan(spec, {"a": [0], "b": [0]}, keys={"b": key_b})
    g = out["b"][0].group
    assert g.node_keys == ["", key_b]
    assert group_peers(g) == [Peer(EPS["a"], ""), Peer(EPS["b"], key_b)]
    assert _plan(spec, {"a": [0], "b": [0]})["a"][0].group.node_keys == []  # loopback: no keys, no field
    wire = msgspec.json.encode(Submit(spec=out["b"][0]))
    assert msgspec.json.decode(wire, type=Submit).spec.group.node_keys == ["", key_b]
    bad = wire.replace(key_b.encode(), b"/etc/fleetdeck/b.key".ljust(40, b"x")[:39])
    with pytest.raises(msgspec.ValidationError, match="node_keys"):
        msgspec.json.decode(bad, type=Submit)
