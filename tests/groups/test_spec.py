"""Group specs from agentctl submit flags and from files: one typed GroupSpec, errors name the field."""

from __future__ import annotations

import pytest

from agentd.groups.spec import (
    GroupSpec,
    GroupSpecError,
    RoleSpec,
    load_spec,
    parse_role,
    parse_submit_args,
)


def test_nodes_and_command():
    spec = parse_submit_args(["--nodes", "a,b,c", "--ranks-per-node", "4", "--gpus-per-rank", "2", "--name",
                              "train-7", "--", "python", "train.py", "--lr", "3"])
    assert spec == GroupSpec(argv=["python", "train.py", "--lr", "3"], name="train-7", nodes=["a", "b", "c"],
                             ranks_per_node=4, gpus_per_rank=2)


def test_roles_make_a_heterogeneous_group():
    spec = parse_submit_args(["--role", "trainer:a,b:2", "--role", "rollout:c,d,e,f", "--", "python", "rl.py"])
    assert spec.roles == [RoleSpec(name="trainer", nodes=["a", "b"], ranks_per_node=2),
                          RoleSpec(name="rollout", nodes=["c", "d", "e", "f"])]
    assert spec.node_order() == ["a", "b", "c", "d", "e", "f"]
    assert [r.ranks_per_node for r in spec.effective_roles()] == [2, 1]


def test_spec_file_and_flags_override_it(tmp_path):
    f = tmp_path / "group.toml"
    f.write_text('name = "rl"\nargv = ["python", "rl.py"]\ngpus_per_rank = 1\nenv = { SEED = "3" }\n'
                 '[roles.trainer]\nnodes = ["a"]\nranks_per_node = 2\n'
                 '[roles.rollout]\nnodes = ["b", "c"]\nargv = ["python", "rollout.py"]\ngpus_per_rank = 0\n')
    spec = load_spec(f)
    assert spec.name == "rl" and spec.env == {"SEED": "3"}
    assert [(r.name, r.argv) for r in spec.effective_roles()] == [("trainer", ["python", "rl.py"]),
                                                                 ("rollout", ["python", "rollout.py"])]
    over = parse_submit_args(["--spec", str(f), "--name", "rl-2", "--gpus-per-rank", "2"])
    assert over.name == "rl-2" and over.gpus_per_rank == 2 and over.roles == spec.roles
    nodes = parse_submit_args(["--spec", str(f), "--nodes", "x,y", "--", "sleep", "1"])
    assert nodes.nodes == ["x", "y"] and nodes.roles == [] and nodes.argv == ["sleep", "1"]


@pytest.mark.parametrize(("argv", "field", "words"), [
    (["--", "true"], "nodes", "--nodes a,b"),
    (["--nodes", "a,b"], "argv", "after --"),
    (["--nodes", "a,a", "--", "true"], "nodes", "more than once"),
    (["--nodes", "a b", "--", "true"], "nodes", "agentctl nodes"),
    (["--nodes", "a", "--ranks-per-node", "0", "--", "true"], "ranks_per_node", "1..1024"),
    (["--nodes", "a", "--ranks-per-node", "x", "--", "true"], "argv", "invalid int value"),
    (["--nodes", "a", "--ranks-per-node", "2", "--per-gpu", "--", "true"], "argv", "not allowed with"),
    (["--nodes", "a", "--gpus-per-rank", "-1", "--", "true"], "gpus_per_rank", "0..64"),
    (["--nodes", "a", "--master-port", "70000", "--", "true"], "master_port", "TCP port"),
    (["--nodes", "a", "--name", "bad name", "--", "true"], "name", "group name"),
    (["--nodes", "a", "--role", "t:b", "--", "true"], "nodes", "not both"),
    (["--role", "t:a", "--role", "t:b", "--", "true"], "roles[1].name", "given twice"),
    (["--role", "trainer", "--", "true"], "roles", "NAME:NODES[:RANKS]"),
    (["--role", "trainer:a:two", "--", "true"], "roles", "not a whole number"),
    (["--role", "trainer:a:0", "--", "true"], "roles[0].ranks_per_node", "1..1024"),
    (["--role", "t:a:2", "--per-gpu", "--", "true"], "roles[0].ranks_per_node", "per_gpu"),
    (["--nodes", "a", "--bogus", "--", "true"], "argv", "unrecognized arguments"),
])
def test_bad_flags_name_the_field_and_the_remedy(argv, field, words):
    with pytest.raises(GroupSpecError) as e:
        parse_submit_args(argv)
    assert e.value.field == field and words in e.value.message, e.value.message


@pytest.mark.parametrize(("text", "field", "words"), [
    ('argv = "python train.py"\nnodes = ["a"]', "argv", "list of strings"),
    ('argv = ["x"]\nnodes = ["a"]\nranks = 3', "ranks", "unknown field"),
    ('argv = ["x"]\nnodes = ["a"]\nranks_per_node = "3"', "ranks_per_node", "Expected `int`"),
    ('argv = ["x"]\n[roles.t]\nranks_per_node = 2', "roles[0].nodes", "required field"),
    ('argv = ["x"\n', "spec", "not valid toml"),
])
def test_bad_files_name_the_field(tmp_path, text, field, words):
    f = tmp_path / "g.toml"
    f.write_text(text)
    with pytest.raises(GroupSpecError) as e:
        load_spec(f)
    assert e.value.field == field and words in e.value.message, e.value.message


def test_missing_file_is_named(tmp_path):
    with pytest.raises(GroupSpecError, match=r"cannot read group spec .*nope\.toml"):
        load_spec(tmp_path / "nope.toml")


def test_parse_role_forms():
    assert parse_role("rollout:a,b") == RoleSpec(name="rollout", nodes=["a", "b"])
    assert parse_role("t:gpu-a.lab:8").ranks_per_node == 8
