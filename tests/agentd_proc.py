"""Start real agentd processes for tests, on free loopback ports, and stop them by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from agentd.transport.ports import free_listen_port

REPO = Path(__file__).resolve().parents[1]


def free_port(host: str = "127.0.0.1") -> int:
    """A free port below the kernel's ephemeral range (agentd.transport.ports says why)."""
    return free_listen_port(host)


@dataclass
class AgentdProc:
    node: str
    state_dir: Path
    ctl: str
    pub: str
    args: list[str]
    proc: subprocess.Popen | None = None
    log_path: Path = field(default=Path("/dev/null"))
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, wait: bool = True) -> AgentdProc:
        self.log_path = self.state_dir.parent / f"{self.node}.stderr.log"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "PYTHONPATH": str(REPO)}
        with open(self.log_path, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agentd.daemon", *self.args],
                stdout=subprocess.DEVNULL, stderr=err, env=env,
            )
        if wait:
            try:
                self.wait_ready()
            except BaseException:  # no fixture owns a daemon that never answered: reap it here
                self.proc.kill()
                self.proc.wait(5)
                raise
        return self

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        from agentd.transport.client import NodeClient, Unreachable

        deadline = time.monotonic() + timeout_s
        with NodeClient(self.ctl, timeout_s=0.5) as c:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"agentd {self.node} exited with {self.proc.returncode}: {self.stderr()[-2000:]}")
                try:
                    c.hello()
                    return
                except Unreachable:
                    time.sleep(0.1)
        raise TimeoutError(f"agentd {self.node} did not answer hello within {timeout_s} s: {self.stderr()[-2000:]}")

    def stderr(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def client(self, **kw):
        from agentd.transport.client import NodeClient

        return NodeClient(self.ctl, **kw)

    def cancel_all_jobs(self) -> None:
        """Jobs outlive agentd by design, so a test's daemon cancels its jobs before it stops."""
        from agentd.protocol import ACTIVE_STATES
        from agentd.protocol.messages import Cancel, Jobs
        from agentd.transport.client import ClientError

        try:
            with self.client(timeout_s=5) as c:
                for job in c.call(Jobs(active_only=True)).jobs:
                    if job.state in ACTIVE_STATES or job.state == "queued":
                        try:
                            c.call(Cancel(job=job.id, grace_s=1.0), timeout_s=15)
                        except ClientError:
                            pass
        except ClientError:
            pass

    def stop(self, timeout_s: float = 15.0, cancel_jobs: bool = True) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        if cancel_jobs:
            self.cancel_all_jobs()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def reap_orphans() -> None:
    """Collect exited orphans (shims of jobs) that were re-parented to this process."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def start_agentd(tmp_path: Path, node: str = "n1", simulate_gpus: int = 2, extra: list[str] | None = None,
                 interval: float = 0.5, wait: bool = True, host: str = "127.0.0.1",
                 env: dict[str, str] | None = None) -> AgentdProc:
    """A real agentd on free loopback ports with its own state dir under ``tmp_path``."""
    ctl, pub = f"tcp://{host}:{free_port(host)}", f"tcp://{host}:{free_port(host)}"
    state_dir = tmp_path / f"state-{node}"
    args = ["--state-dir", str(state_dir), "--ctl", ctl, "--pub", pub, "--node-name", node,
            "--interval", str(interval), "--simulate-gpus", str(simulate_gpus), *(extra or [])]
    return AgentdProc(node, state_dir, ctl, pub, args, env=env or {}).start(wait=wait)
