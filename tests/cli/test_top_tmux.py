"""``agentctl top`` on a real terminal (tmux) against a real agentd: keys select, filter,
sort, pause/resume, change priority, cancel after a confirmation, show help and quit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from tests.agentd_proc import REPO
from tests.cli.test_agentctl import agentctl

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="SKIPPED: tmux is not installed (apt-get install tmux) — interactive top untested")


class Tmux:
    """A private tmux server (its own socket) running one command in a 160x45 window."""

    def __init__(self, command: str) -> None:
        self.sock = f"agentctl-top-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm-256color"}
        env.pop("TMUX", None)
        self.env = env
        self._tmux("new-session", "-d", "-s", "t", "-x", "160", "-y", "45", command)

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.sock, *args], capture_output=True, text=True, timeout=20,
                              env=self.env, check=False).stdout

    def keys(self, *keys: str, literal: bool = False) -> None:
        self._tmux("send-keys", "-t", "t", *(["-l"] if literal else []), *keys)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "t")

    def wait_for(self, predicate, what: str, timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if predicate(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"top did not show {what} within {timeout_s:.0f} s; the screen:\n{text}")

    def close(self) -> None:
        self._tmux("kill-server")


def _job(node, job_id):
    r = agentctl("--node", node.ctl, "--json", "show", job_id)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _wait_job(node, job_id, pred, what, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        j = _job(node, job_id)
        if pred(j):
            return j
        time.sleep(0.2)
    raise AssertionError(f"{job_id} never became {what}: {j}")


def _row(screen: str, job_id: str) -> str:
    return next((ln for ln in screen.splitlines() if ln.strip().startswith(job_id + " ")), "")


def test_top_is_interactive_on_a_terminal(agentd, tmp_path):
    ids = []
    for name in ("alpha-job", "beta-job"):
        r = agentctl("--node", agentd.ctl, "submit", "--json", "--name", name, "--", sys.executable, "-c",
                     "import time\nwhile True: time.sleep(0.1)")
        assert r.returncode == 0, r.stderr
        ids.append(json.loads(r.stdout)["id"])
    first, second = ids
    for j in ids:
        _wait_job(agentd, j, lambda x: x["state"] == "running", "running")
    done = tmp_path / "top-exit"
    t = Tmux(f"{sys.executable} -m agentd.cli --node {agentd.ctl} top; echo $? > {done}; sleep 60")
    try:
        screen = t.wait_for(lambda s: first in s and second in s, "both jobs")
        assert "agentctl top" in screen and "n1" in screen
        # Down selects the second job (sorted by id); p pauses it, and only it
        t.keys("Down")
        t.keys("p")
        _wait_job(agentd, second, lambda x: x["state"] == "paused", "paused")
        assert _job(agentd, first)["state"] == "running"
        t.wait_for(lambda s: "paused" in _row(s, second), f"{second} paused")
        # + raises its priority, - lowers it: the node changes it, the table follows
        t.keys("+")
        _wait_job(agentd, second, lambda x: x["priority"] == 1, "priority +1")
        t.wait_for(lambda s: "+1" in _row(s, second), f"{second} at +1")
        t.keys("+")
        _wait_job(agentd, second, lambda x: x["priority"] == 2, "priority +2")
        t.keys("-")
        _wait_job(agentd, second, lambda x: x["priority"] == 1, "priority back to +1")
        # p again resumes it
        t.keys("p")
        _wait_job(agentd, second, lambda x: x["state"] == "running", "running again")
        # sort keys: by priority puts the second job (+1) first
        for _ in range(3):  # id -> name -> state -> priority
            t.keys("s")
        screen = t.wait_for(lambda s: "sort: priority" in s, "sort by priority")
        assert screen.index(second + " ") < screen.index(first + " ")
        # / filters; Enter keeps the filter; the selection follows the only match
        t.keys("/")
        t.keys("alpha", literal=True)
        t.keys("Enter")
        screen = t.wait_for(lambda s: "filter: alpha" in s and second not in s, "the filter")
        assert first in screen and "1 matching" in screen
        # c asks first: n keeps the job, c then y cancels it
        t.keys("c")
        t.wait_for(lambda s: f"Cancel job {first}?" in s, "the confirmation")
        t.keys("n")
        t.wait_for(lambda s: "not cancelled" in s, "the refusal")
        assert _job(agentd, first)["state"] == "running"
        t.keys("c")
        t.wait_for(lambda s: f"Cancel job {first}?" in s, "the confirmation")
        t.keys("y")
        _wait_job(agentd, first, lambda x: x["state"] == "cancelled", "cancelled", timeout_s=40)
        assert _job(agentd, second)["state"] == "running"
        # Esc clears the filter; ? shows the keys, any key closes the help
        t.keys("Escape")
        t.wait_for(lambda s: "filter:" not in s and second in s, "the filter cleared")
        t.keys("?")
        screen = t.wait_for(lambda s: "Keys" in s and "pause the selected job" in s, "the help")
        t.keys("x")
        t.wait_for(lambda s: "pause the selected job" not in s and second in s, "the help closed")
        # q quits with status 0 and gives the terminal back
        t.keys("q")
        deadline = time.monotonic() + 20
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done.exists() and done.read_text().strip() == "0", t.screen()
    finally:
        t.close()
        agentctl("--node", agentd.ctl, "cancel", "--grace", "0", *ids)


def test_top_piped_prints_one_view_and_count_keeps_the_script_mode(agentd):
    r = agentctl("--node", agentd.ctl, "top", timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("Nodes") == 1 and "n1" in r.stdout and "live" in r.stdout
    r = agentctl("--node", agentd.ctl, "top", "--count", "2", timeout=60)
    assert r.returncode == 0 and r.stdout.count("Nodes") == 2
