"""A real single-node Slurm: munged, slurmctld and slurmd, started by pid in a private temp dir
with their own ports, munge socket and key, and stopped by pid at the end (jobs cancelled first).

The Slurm tests use it through tests/slurm/conftest.py. By hand, as root, for trying agentd and
the app against Slurm (scripts/slurm-dev.sh wraps this):

    .venv/bin/python -m tests.slurm.cluster      # prints `export SLURM_CONF=...`; Ctrl-C stops it
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from agentd.control.slurm import SlurmCommands, SlurmError
from agentd.transport.ports import free_listen_port

START_TIMEOUT_S = 30.0
BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "scontrol", "sbatch", "squeue", "sinfo", "scancel")


class SlurmCannotStart(RuntimeError):
    """Slurm or munge is missing here, or did not start; the message says which and why."""


def _free_port() -> int:
    return free_listen_port("127.0.0.1")


def _find(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


@dataclass
class SlurmCluster:
    """The running test cluster: its environment, node name, and helpers to submit and wait."""

    root: Path
    conf: Path
    node: str
    cpus: int
    env: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def commands(self) -> SlurmCommands:
        return SlurmCommands(env=self.env, timeout_s=15.0)

    def run(self, *argv: str) -> str:
        return self.commands().run(list(argv))

    def sbatch(self, *args: str, script: str = "sleep 300") -> int:
        out = self.run("sbatch", "--parsable", "-o", "/dev/null", "-e", "/dev/null", "-D", str(self.root), *args, "--wrap", script)
        return int(out.strip().split(";")[0])

    def state(self, job: int) -> str:
        out = self.run("squeue", "-h", "-t", "all", "-j", str(job), "-o", "%T")
        return out.strip() or "GONE"

    def wait_state(self, job: int, *states: str, timeout_s: float = 20.0) -> str:
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                last = self.state(job)
            except SlurmError as exc:
                last = f"error: {exc.message}"
            if last in states:
                return last
            time.sleep(0.2)
        raise AssertionError(f"Slurm job {job} did not reach {states} within {timeout_s:g} s (last: {last})")

    def cancel_all(self) -> None:
        try:
            ids = self.run("squeue", "-h", "-o", "%i").split()
            if ids:
                self.run("scancel", *ids)
        except SlurmError:
            pass
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                out = self.run("squeue", "-h", "-o", "%i %T")
            except SlurmError:
                return
            if not out.strip():
                return
            time.sleep(0.2)


def _write_conf(root: Path, node: str, cpus: int, munge_socket: Path) -> Path:
    conf = root / "slurm.conf"
    conf.write_text(f"""\
# Written by tests/slurm/conftest.py for one test session.
ClusterName=fleetdecktest
SlurmctldHost=localhost
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket},cred_expire=5
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
KillWait=2
MinJobAge=300
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=500 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def _stop(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _leftover_pids(root: Path) -> list[int]:
    """Processes this cluster left behind: its slurmstepd daemons (they detach from slurmd by
    design) and every descendant of them. A step daemon is ours when its job runs in ``root``
    (sbatch -D) or its command line names a file under ``root`` (the job script in the spool)."""
    parents: dict[int, int] = {}
    ours: set[int] = set()
    key = str(root.resolve()).encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            parents[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes()
            if cmd.startswith(b"slurmstepd") or key in cmd:
                cwd = (d / "cwd").resolve()
                if key in cmd or root.resolve() in [cwd, *cwd.parents]:
                    ours.add(int(d.name))
        except (OSError, ValueError, IndexError):
            continue
    grew = True
    while grew:  # add descendants until nothing changes
        grew = False
        for pid, ppid in parents.items():
            if ppid in ours and pid not in ours:
                ours.add(pid)
                grew = True
    return sorted(ours)


@contextmanager
def single_node_slurm() -> Iterator[SlurmCluster]:
    """Start the cluster, yield it once its node is idle, stop everything on exit."""
    missing = [b for b in BINARIES if _find(b) is None]
    if missing:
        raise SlurmCannotStart(f"Slurm/munge binaries missing: {', '.join(missing)} "
                   "(apt-get install slurmctld slurmd slurm-client munge, or `make system-deps`)")
    if os.geteuid() != 0:
        raise SlurmCannotStart("the test Slurm runs slurmd as root (SlurmdUser=root); run the tests as root")
    try:
        munge_user = pwd.getpwnam("munge")
    except KeyError:
        raise SlurmCannotStart("no 'munge' user (the munge package creates it)") from None

    root = Path(tempfile.mkdtemp(prefix="fleetdeck-slurm-"))
    root.chmod(0o755)  # munged (user munge) must reach its socket dir below
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir()
    mdir = root / "munge"
    mdir.mkdir(mode=0o755)
    os.chown(mdir, munge_user.pw_uid, munge_user.pw_gid)
    key = mdir / "munge.key"
    as_munge = {"user": munge_user.pw_uid, "group": munge_user.pw_gid, "extra_groups": []}
    node = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"}
    cluster: SlurmCluster | None = None
    procs: dict[str, subprocess.Popen] = {}
    logs = []
    try:
        r = subprocess.run([_find("mungekey"), "--create", f"--keyfile={key}"], capture_output=True, text=True, **as_munge)
        if r.returncode != 0:
            # older munge: no mungekey; a random key file is just as good
            key.write_bytes(os.urandom(1024))
            os.chown(key, munge_user.pw_uid, munge_user.pw_gid)
        key.chmod(0o600)
        msock = mdir / "munge.socket"
        conf = _write_conf(root, node, cpus, msock)
        env["SLURM_CONF"] = str(conf)
        mlog = open(root / "log" / "munged.out", "w")  # noqa: SIM115 - closed with the cluster (logs)
        logs.append(mlog)
        procs["munged"] = subprocess.Popen(
            [_find("munged"), "-F", f"--socket={msock}", f"--key-file={key}", f"--pid-file={mdir}/munged.pid",
             f"--log-file={mdir}/munged.log", f"--seed-file={mdir}/munged.seed"],
            stdout=mlog, stderr=subprocess.STDOUT, start_new_session=True, **as_munge)
        deadline = time.monotonic() + 10
        while not msock.exists():
            if procs["munged"].poll() is not None or time.monotonic() > deadline:
                raise SlurmCannotStart(f"munged did not start: {(root / 'log' / 'munged.out').read_text()[-800:]}")
            time.sleep(0.05)
        for name, argv in (("slurmctld", [_find("slurmctld"), "-D", "-i"]), ("slurmd", [_find("slurmd"), "-D"])):
            out = open(root / "log" / f"{name}.out", "w")  # noqa: SIM115 - closed with the cluster (logs)
            logs.append(out)
            procs[name] = subprocess.Popen(argv, env=env, cwd=root / "spool", stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True)
        cluster = SlurmCluster(root=root, conf=conf, node=node, cpus=cpus, env=env, procs=procs)
        deadline = time.monotonic() + START_TIMEOUT_S
        state = ""
        while time.monotonic() < deadline:
            for name in ("slurmctld", "slurmd"):
                if procs[name].poll() is not None:
                    text = (root / "log" / f"{name}.out").read_text()[-1500:]
                    raise SlurmCannotStart(f"{name} exited with status {procs[name].returncode} at start:\n{text}")
            try:
                state = cluster.run("sinfo", "-h", "-n", node, "-o", "%T").strip()
            except SlurmError as exc:
                state = f"error: {exc.message}"
            if state in ("idle", "mixed", "allocated"):
                break
            time.sleep(0.25)
        else:
            raise SlurmCannotStart(f"the test Slurm node {node} never became idle within {START_TIMEOUT_S:g} s (last: {state}); "
                       f"logs in {root}/log")
        yield cluster
    finally:
        if cluster is not None and procs.get("slurmctld") and procs["slurmctld"].poll() is None:
            cluster.cancel_all()
        for name in ("slurmd", "slurmctld", "munged"):
            if name in procs:
                _stop(procs[name])
        # Job step daemons detach from slurmd; after cancel_all they are gone, but never leave one
        # (nor a job process) behind.
        for pid in _leftover_pids(root):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for f in logs:
            f.close()
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    try:
        with single_node_slurm() as cluster:
            print(f"export SLURM_CONF={cluster.conf}   # node {cluster.node}, {cluster.cpus} CPUs, partition debug")
            print("Slurm is up; Ctrl-C stops it (jobs are cancelled, daemons stopped by pid).", file=sys.stderr)
            sys.stdout.flush()
            try:
                while all(p.poll() is None for p in cluster.procs.values()):
                    time.sleep(1)
                print("a Slurm daemon exited; stopping the rest", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                return 0
    except SlurmCannotStart as exc:
        print(f"slurm-dev: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    sys.exit(main())
