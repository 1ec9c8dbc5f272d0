"""`agentctl cluster from-slurm` against the real test Slurm: its output is a valid cluster file."""

from __future__ import annotations

import tomllib

import pytest

from agentd.cli import build_parser
from agentd.clusterfile import load_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.root, pytest.mark.timeout(60)]


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


def test_from_slurm_writes_a_cluster_file(slurm_cluster, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    monkeypatch.setenv("PATH", slurm_cluster.env["PATH"])
    assert _run(["cluster", "from-slurm", "--name", "lab", "--key-dir", "/etc/fleetdeck/keys"]) == 0
    out = capsys.readouterr().out
    data = tomllib.loads(out)
    assert data["name"] == "lab"
    [node] = data["node"]
    assert node == {
        "name": slurm_cluster.node, "endpoint": "tcp://127.0.0.1:7710",
        "server_key": f"/etc/fleetdeck/keys/{slurm_cluster.node}.key",
        "labels": {"partition": "debug", "scheduler": "slurm"},
    }
    path = tmp_path / "cluster.toml"
    path.write_text(out)
    assert load_cluster(path).node[0].name == slurm_cluster.node  # the app's own loader accepts it

    assert _run(["cluster", "from-slurm", "--address", "name", "--port", "7800"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["node"][0]["endpoint"] == f"tcp://{slurm_cluster.node}:7800"


def test_from_slurm_unknown_partition_says_so(slurm_cluster, monkeypatch, capsys):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    monkeypatch.setenv("PATH", slurm_cluster.env["PATH"])
    assert _run(["cluster", "from-slurm", "-p", "nope"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "nope" in captured.err


def test_from_slurm_without_slurm_fails_clearly(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol here
    assert _run(["cluster", "from-slurm"]) == 1
    err = capsys.readouterr().err
    assert "scontrol is not on PATH" in err
