"""``make run`` and ``make demo`` take another port / cluster file name when the default is
taken, and say which they use."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from tests.agentd_proc import REPO, free_port


def _runlocal(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(PYTHONPATH=str(REPO), XDG_STATE_HOME=str(tmp_path / "state"))
    # stdout is a pipe: the text view prints one view and ends, so the session ends too
    return subprocess.run([sys.executable, "-m", "agentd.runlocal", *args], capture_output=True, text=True,
                          timeout=120, env=env, stdin=subprocess.DEVNULL)


def test_make_run_takes_free_ports_when_the_default_is_taken_and_says_which(tmp_path):
    port = free_port()
    with socket.socket() as squatter:  # another program on the port, not an agentd
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        res = _runlocal(tmp_path, "--port", str(port))
    assert res.returncode == 0, res.stderr
    assert f"port {port} or {port + 1} is taken by another program; using " in res.stderr, res.stderr
    used = res.stderr.split("using ", 1)[1].split(" and ", 1)[0]
    assert used.isdigit() and int(used) != port
    assert f"agentctl reaches it with --node tcp://127.0.0.1:{used}" in res.stderr
    assert "Nodes" in res.stdout and "live" in res.stdout  # agentctl top, connected to it
    # the session's agentd is gone with the session
    res = subprocess.run([sys.executable, "-m", "agentd.cli", "--node", f"tcp://127.0.0.1:{used}", "--timeout", "1", "nodes"],
                         capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 2


def test_make_run_uses_an_agentd_already_on_the_port(agentd, tmp_path):
    port = agentd.ctl.rsplit(":", 1)[1]
    res = _runlocal(tmp_path, "--port", port)
    assert res.returncode == 0, res.stderr
    assert f"using the agentd already answering at tcp://127.0.0.1:{port}" in res.stderr
    assert "n1" in res.stdout and not (tmp_path / "state").exists()


def test_the_demo_cluster_file_takes_the_next_name_while_another_demo_runs(agentd, tmp_path):
    from gui.local_agents import demo_cluster_path

    assert demo_cluster_path(tmp_path) == tmp_path / "demo-cluster.toml"
    # a file left by a demo that ended (nothing answers) is reused
    (tmp_path / "demo-cluster.toml").write_text(f'[[node]]\nname = "sim-1"\nendpoint = "tcp://127.0.0.1:{free_port()}"\n')
    assert demo_cluster_path(tmp_path) == tmp_path / "demo-cluster.toml"
    # a file whose daemon answers belongs to a running demo: the next name is taken
    (tmp_path / "demo-cluster.toml").write_text(f'[[node]]\nname = "sim-1"\nendpoint = "{agentd.ctl}"\n')
    assert demo_cluster_path(tmp_path) == tmp_path / "demo-cluster-2.toml"
