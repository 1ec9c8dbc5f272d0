"""Start agentd processes on this machine for the app: the local daemon on request, and the
demo cluster (N daemons with simulated GPUs on free loopback ports). Processes are stopped by
pid when the app exits. Runs in a plain thread: nothing here may touch Qt widgets.

The demo writes a cluster file (``demo-cluster.toml`` in the current directory, or
``demo-cluster-2.toml``... when another running demo owns that name) so that
``agentctl --cluster demo-cluster.toml ...`` reaches its daemons; the file is removed when the
demo stops. ``python -m gui.local_agents --demo N`` runs the demo's daemons without the app.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from agentd.protocol.jobs import CheckpointContract, JobSpec
from agentd.protocol.messages import Cancel, Jobs, Submit
from agentd.transport.client import ClientError, NodeClient
from agentd.transport.ports import free_listen_port
from gui.sources.base import NodeAddress

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
CANCEL_TIMEOUT_S = 5.0
CANCEL_GRACE_S = 1.0
DEMO_GPUS = 4
DEMO_INTERVAL_S = 1.0
DEMO_TRAIN_STEPS = 1_000_000  # effectively forever; the demo cancels its jobs on exit
DEMO_JOB_CPUS = 0.3
DEMO_CLUSTER_NAME = "demo-cluster"
DEMO_CLUSTER_TRIES = 50
REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples"


def free_port() -> int:
    return free_listen_port("127.0.0.1")


def agentd_command() -> list[str]:
    """``<venv>/bin/agentd`` next to this interpreter, else ``python -m agentd.daemon``."""
    exe = Path(sys.executable).with_name("agentd")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "agentd.daemon"]


@dataclass
class LocalAgent:
    name: str
    ctl: str
    pub: str
    state_dir: Path
    proc: subprocess.Popen
    log_path: Path
    cancel_jobs_on_stop: bool = False  # demo daemons: their example jobs end with them

    def address(self) -> NodeAddress:
        return NodeAddress(key=self.name, endpoint=self.ctl)


@dataclass
class LocalAgents:
    """The daemons this app started; ``stop_all`` ends them by pid."""

    agents: list[LocalAgent] = field(default_factory=list)
    temp_root: Path | None = None
    cluster_file: Path | None = None  # the demo's, removed by stop_all
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, name: str, *, ctl: str | None = None, pub: str | None = None, simulate_gpus: int = 0,
              state_dir: Path | None = None, interval_s: float = DEMO_INTERVAL_S, cancel_jobs_on_stop: bool = False) -> LocalAgent:
        if state_dir is None:
            if self.temp_root is None:
                self.temp_root = Path(tempfile.mkdtemp(prefix="fleetdeck-"))
            state_dir = self.temp_root / name
        state_dir.mkdir(parents=True, exist_ok=True)
        ctl = ctl or f"tcp://127.0.0.1:{free_port()}"
        pub = pub or f"tcp://127.0.0.1:{free_port()}"
        cmd = [*agentd_command(), "--state-dir", str(state_dir), "--ctl", ctl, "--pub", pub, "--node-name", name,
               "--interval", str(interval_s)]
        if simulate_gpus:
            cmd += ["--simulate-gpus", str(simulate_gpus)]
        log_path = state_dir / "agentd.log"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        with open(log_path, "ab") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True)
        agent = LocalAgent(name, ctl, pub, state_dir, proc, log_path, cancel_jobs_on_stop)
        with self._lock:
            self.agents.append(agent)
        return agent

    def wait_ready(self, agent: LocalAgent, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block (in a worker thread) until the daemon answers hello; RuntimeError if it exits."""
        deadline = time.monotonic() + timeout_s
        with NodeClient(agent.ctl, timeout_s=0.5) as c:
            while time.monotonic() < deadline:
                if agent.proc.poll() is not None:
                    tail = agent.log_path.read_text(errors="replace")[-1500:] if agent.log_path.exists() else ""
                    raise RuntimeError(f"agentd {agent.name!r} exited with status {agent.proc.returncode}: {tail.strip() or 'no output'}")
                try:
                    c.hello()
                    return
                except ClientError:
                    time.sleep(0.2)
        raise RuntimeError(f"agentd {agent.name!r} did not answer at {agent.ctl} within {timeout_s:.0f} s; see {agent.log_path}")

    def stop_all(self) -> None:
        with self._lock:
            agents, self.agents = self.agents, []
        # Cancel demo jobs on every daemon at once: quitting should take a second, not N.
        cancellers = [threading.Thread(target=cancel_all_jobs, args=(a,), name=f"cancel-{a.name}")
                      for a in agents if a.cancel_jobs_on_stop and a.proc.poll() is None]
        for t in cancellers:
            t.start()
        for t in cancellers:
            t.join(CANCEL_TIMEOUT_S + 5)
        for a in agents:
            if a.proc.poll() is None:
                a.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for a in agents:
            try:
                a.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                a.proc.kill()
                a.proc.wait(5)
        if self.temp_root is not None:
            shutil.rmtree(self.temp_root, ignore_errors=True)
            self.temp_root = None
        if self.cluster_file is not None:
            self.cluster_file.unlink(missing_ok=True)
            self.cluster_file = None

    def write_cluster_file(self, directory: Path, name: str = "") -> Path:
        """Write the cluster file of the running agents into ``directory`` under the first free
        name (``demo-cluster.toml``, ``demo-cluster-2.toml``...): a name is free when no file
        has it or when none of the daemons that file lists answers (a demo that ended)."""
        from agentd.clusterfile import ClusterNode, dump_cluster

        with self._lock:
            nodes = [ClusterNode(name=a.name, endpoint=a.ctl, labels={"demo": "1"}) for a in self.agents]
        path = demo_cluster_path(directory)
        header = (f"# Fleetdeck demo cluster, written by pid {os.getpid()}; removed when the demo stops.\n"
                  "# agentctl --cluster THIS_FILE nodes | jobs | submit --node NAME ... | migrate JOB --to NAME\n")
        path.write_text(header + dump_cluster(nodes, name=name or path.stem))
        self.cluster_file = path
        return path


def _live_cluster_file(path: Path) -> bool:
    """Whether some daemon that the cluster file ``path`` lists answers now."""
    from agentd.clusterfile import ClusterFileError, load_cluster

    try:
        nodes = load_cluster(path).node
    except ClusterFileError:
        return False
    for n in nodes:
        try:
            with NodeClient(n.endpoint, timeout_s=0.5) as c:
                c.hello()
            return True
        except (ClientError, ValueError):
            continue
    return False


def demo_cluster_path(directory: Path) -> Path:
    """The first name in ``directory`` that no running demo owns: demo-cluster.toml, -2, -3..."""
    for i in range(1, DEMO_CLUSTER_TRIES + 1):
        path = directory / (f"{DEMO_CLUSTER_NAME}.toml" if i == 1 else f"{DEMO_CLUSTER_NAME}-{i}.toml")
        if not path.exists() or not _live_cluster_file(path):
            return path
    raise RuntimeError(f"{DEMO_CLUSTER_TRIES} demo cluster files in {directory} all belong to running demos; "
                       "stop one or remove its file")


def demo_workloads(node_index: int) -> list[JobSpec]:
    """The example jobs the demo submits to its ``node_index``-th daemon: long-running, and
    CPU-capped so a demo of several nodes stays gentle on a laptop."""
    specs: list[JobSpec] = []
    trainer, agent = EXAMPLES / "trainer.py", EXAMPLES / "agent_sim.py"
    ckpt = CheckpointContract(signal="SIGUSR1", timeout_s=30.0)
    if trainer.exists():
        train_argv = [sys.executable, str(trainer), "--steps", str(DEMO_TRAIN_STEPS), "--step-time", "0.02", "--checkpoint-mb", "32"]
        specs.append(JobSpec(argv=train_argv, name=f"train-{node_index}", gpus=2, cpus=DEMO_JOB_CPUS, checkpoint=ckpt,
                             priority=1 if node_index == 0 else 0, counters=["samples", "tokens", "steps"], labels={"demo": "1"}))
        if node_index % 2 == 0:
            specs.append(JobSpec(argv=train_argv, name=f"finetune-{node_index}", gpus=1, cpus=DEMO_JOB_CPUS, checkpoint=ckpt,
                                 counters=["samples", "tokens", "steps"], labels={"demo": "1"}))
    if agent.exists():
        specs.append(JobSpec(argv=[sys.executable, str(agent), "--turns", "0"], name=f"agents-{node_index}", kind="agent",
                             cpus=DEMO_JOB_CPUS, counters=["tokens", "requests"], labels={"demo": "1"}))
    return specs


def demo_groups(cluster_file: Path, names: list[str]) -> list[list[str]]:
    """agentctl command lines for the demo's groups (run through the real gang path): a ring
    all-reduce trainer over the first two nodes, and with three or more an async-RL-shaped
    group (a trainer on the first node, rollout workers on the next two). CPU-capped."""
    ring, rl = EXAMPLES / "ring_trainer.py", EXAMPLES / "async_rl.py"
    base = [sys.executable, "-m", "agentd.cli", "--cluster", str(cluster_file), "submit",
            "--cpus", str(DEMO_JOB_CPUS), "--label", "demo=1"]
    cmds = []
    if len(names) >= 2 and ring.exists():
        cmds.append([*base, "--nodes", ",".join(names[:2]), "--name", "ring", "--",
                     sys.executable, str(ring), "--steps", "1000000", "--compute-ms", "60", "--checkpoint-every", "200"])
    if len(names) >= 3 and rl.exists():
        cmds.append([*base, "--role", f"trainer:{names[0]}", "--role", f"rollout:{names[1]},{names[2]}",
                     "--name", "async-rl", "--", sys.executable, str(rl), "--steps", "1000000"])
    return cmds


def run_group_submits(cmds: list[list[str]]) -> list[str]:
    """Run each agentctl submit; readable failures (empty when all went)."""
    problems = []
    for cmd in cmds:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems.append(f"the demo group {cmd[cmd.index('--name') + 1]} could not be submitted: {exc}")
            continue
        if out.returncode != 0:
            problems.append(f"the demo group {cmd[cmd.index('--name') + 1]} was refused: {out.stderr.strip()[-300:]}")
    return problems


def submit(agent: LocalAgent, specs: list[JobSpec]) -> list[str]:
    """Submit specs like ``agentctl submit``; returns readable failures (empty when all went)."""
    problems = []
    with NodeClient(agent.ctl, timeout_s=10.0) as c:
        for spec in specs:
            try:
                c.call(Submit(spec=spec))
            except ClientError as exc:
                problems.append(f"submitting {spec.name!r} to {agent.name} failed: {exc}")
    return problems


def cancel_all_jobs(agent: LocalAgent, timeout_s: float = CANCEL_TIMEOUT_S) -> None:
    """Cancel every active job of a daemon and wait (bounded) until they ended: agentd never
    kills jobs when it stops, so demo jobs would otherwise outlive the demo."""
    try:
        with NodeClient(agent.ctl, timeout_s=2.0) as c:
            active = [j.id for j in c.call(Jobs(active_only=True)).jobs]
            for job_id in active:
                try:
                    c.call(Cancel(job=job_id, grace_s=CANCEL_GRACE_S), timeout_s=timeout_s)
                except ClientError as exc:
                    log.warning("could not cancel demo job %s on %s: %s", job_id, agent.name, exc)
            deadline = time.monotonic() + timeout_s
            while active and time.monotonic() < deadline:
                active = [j.id for j in c.call(Jobs(active_only=True)).jobs]
                time.sleep(0.1)
    except ClientError as exc:
        log.warning("could not cancel the jobs of %s: %s", agent.name, exc)


def run_headless_demo(n: int, directory: Path, with_jobs: bool = True) -> int:
    """The demo without the app: start ``n`` daemons (sim-1..sim-n), write the cluster file,
    submit the example jobs, then wait for SIGINT/SIGTERM and stop everything by pid."""
    agents = LocalAgents()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        started = [agents.start(f"sim-{i + 1}", simulate_gpus=DEMO_GPUS, cancel_jobs_on_stop=True) for i in range(n)]
        path = agents.write_cluster_file(directory)
        for a in started:
            agents.wait_ready(a)
            print(f"fleetdeck demo: node {a.name} at {a.ctl} (state {a.state_dir})", file=sys.stderr, flush=True)
        print(f"fleetdeck demo: cluster file {path}; try: agentctl --cluster {path} nodes", file=sys.stderr, flush=True)
        if with_jobs:
            for i, a in enumerate(started):
                for problem in submit(a, demo_workloads(i)):
                    print(f"fleetdeck demo: {problem}", file=sys.stderr, flush=True)
        print("fleetdeck demo: ready; Ctrl-C stops it", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
        return 0
    except RuntimeError as exc:
        print(f"fleetdeck demo: {exc}", file=sys.stderr)
        return 1
    finally:
        agents.stop_all()


def main(argv: list[str] | None = None) -> int:
    """``python -m gui.local_agents --demo N``: the demo's daemons and cluster file, no window."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m gui.local_agents", description="Run the demo's daemons without the app.")
    p.add_argument("--demo", type=int, default=3, metavar="N", help="how many daemons (1 to 16, default 3)")
    p.add_argument("--dir", type=Path, default=Path.cwd(), help="where to write the cluster file (default: here)")
    p.add_argument("--no-jobs", action="store_true", help="do not submit the example jobs")
    args = p.parse_args(argv)
    if not 1 <= args.demo <= 16:
        p.error(f"--demo {args.demo}: choose between 1 and 16 daemons")
    return run_headless_demo(args.demo, args.dir, with_jobs=not args.no_jobs)


if __name__ == "__main__":
    sys.exit(main())
