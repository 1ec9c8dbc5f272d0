"""The README's "Try it" table runs as written, in order, against the demo's real daemons.

The demo is started the way the README says to start it without the app
(``.venv/bin/python -m gui.local_agents --demo 3``, plus ``--no-jobs`` so that the example
workloads do not load a 2-core CI machine), in a scratch directory that looks like a fresh
clone (``.venv`` and ``examples`` linked in). Then every ``agentctl`` command of the table
runs in one bash, in the README's order, and each must exit 0 and do what its row says.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.agentd_proc import REPO

README = REPO / "README.md"
VENV = Path(sys.prefix)


def try_it_commands() -> list[str]:
    """The backticked commands of the "Try it" table, in order."""
    text = README.read_text()
    section = text[text.index("## Try it"):]
    section = section[:section.index("\n## ", 3)]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith(("| what", "|---"))]
    cmds: list[str] = []
    for row in rows:
        command_cell = row.rstrip(" |").rsplit(" | ", 1)[1]
        cmds += re.findall(r"`([^`]+)`", command_cell)
    return cmds


def test_the_table_names_the_demo_the_cluster_file_and_node_names():
    cmds = try_it_commands()
    assert cmds[0] == "make run" and cmds[1] == "make demo"
    agentctl = [c for c in cmds if ".venv/bin/agentctl" in c]
    assert agentctl and all("--cluster demo-cluster.toml" in c for c in agentctl if "replay" not in c)
    assert any("submit --node sim-1" in c for c in agentctl)
    assert any("migrate $JOB --to sim-2" in c for c in agentctl)


@pytest.mark.slow
def test_readme_try_it_runs_in_order(tmp_path):
    if not (VENV / "bin" / "agentctl").exists():
        pytest.skip(f"SKIPPED: {VENV}/bin/agentctl is not installed (pip install -e . in that venv)")
    cmds = try_it_commands()
    (headless,) = [c for c in cmds if "gui.local_agents" in c]
    agentctl = [c for c in cmds if ".venv/bin/agentctl" in c]
    (tmp_path / ".venv").symlink_to(VENV)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    demo = subprocess.Popen(["bash", "-c", f"exec {headless} --no-jobs"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        said = _wait_for_line(demo, "ready", 90)
        assert f"cluster file {tmp_path / 'demo-cluster.toml'}" in said, said
        script = ["cd " + str(tmp_path)]
        for i, c in enumerate(agentctl):
            script += [f"echo '### CMD {i}'", c, f"echo \"### RC {i} $?\""]
        script += ['echo "### JOB $JOB"', ".venv/bin/agentctl --cluster demo-cluster.toml --json jobs",
                   'echo "### RC last $?"']
        res = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300, stdin=subprocess.DEVNULL)
        out = res.stdout
        rcs = dict(re.findall(r"^### RC (\S+) (\d+)$", out, re.M))
        assert len(rcs) == len(agentctl) + 1, out + res.stderr
        failed = {agentctl[int(i)]: rc for i, rc in rcs.items() if i != "last" and rc != "0"}
        assert not failed, f"{failed}\n{out}\n{res.stderr}"
        assert "Traceback" not in res.stderr
        job = re.search(r"^### JOB (\S+)$", out, re.M).group(1)
        assert job.startswith("sim-1."), out
        # what each row says happened, happened
        nodes_out = _section(out, 0)
        assert "sim-1" in nodes_out and "sim-2" in nodes_out and "sim-3" in nodes_out
        assert "Jobs" in _section(out, 1) and "sim-1" in _section(out, 1)  # top: one view, piped
        jobs = json.loads(out.split("### RC last")[0].rsplit(f"### JOB {job}\n", 1)[1])
        # `jobs` lists the live hop only: the job that continues the one submitted on sim-1
        assert not [j for j in jobs if j["id"] == job], f"the superseded {job} is listed: {jobs}"
        there = [j for j in jobs if job in j.get("lineage", [])]
        assert there and there[0]["node"] == "sim-2" and there[0]["state"] == "running", jobs
        replay = [json.loads(x) for x in out.splitlines() if x.startswith("{") and '"type"' in x]
        assert {"sample", "link"} <= {d["type"] for d in replay}
        assert (tmp_path / "session.db").exists()
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)
        try:
            demo.wait(60)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait(10)
        demo.stderr.close()
    assert demo.returncode == 0
    assert not (tmp_path / "demo-cluster.toml").exists(), "the demo leaves its cluster file behind"


def _section(out: str, i: int) -> str:
    return out.split(f"### CMD {i}\n", 1)[1].split(f"### RC {i} ", 1)[0]


def _wait_for_line(proc: subprocess.Popen, word: str, timeout_s: float) -> str:
    """stderr of ``proc`` up to the first line holding ``word``; fails after ``timeout_s``."""
    import select

    seen = ""
    fd = proc.stderr.fileno()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.5)[0]:
            chunk = os.read(fd, 65536).decode(errors="replace")
            if not chunk:
                break
            seen += chunk
            if word in seen:
                return seen
    raise AssertionError(f"the demo did not say {word!r} within {timeout_s:.0f} s: {seen}")
