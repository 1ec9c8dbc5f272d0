"""Benchmark job migration between two real agentd on loopback; prints a markdown table.

For each checkpoint size a trainer (tests/migration/ckpt_trainer.py) runs on node A, is
migrated to node B, and the bench reports:

* checkpoint write: how long the trainer took to write (and fsync) its checkpoint;
* downtime: the trainer's last step on A to its first step on B (wall clock);
* overhead: downtime minus checkpoint write (what migration itself costs);
* pack+send time (the source packs the tar while it streams it) and its throughput, from
  the source's migration journal; start on B: commit sent -> first step on B (digest check,
  unpack, launch, interpreter start).

Budgets (100 MiB): downtime <= checkpoint write + 1 s; transfer >= 300 MiB/s.

    .venv/bin/python bench/migrate.py [--sizes-mib 1,100,1024] [--repeat 3] [--prefault-mib 0] [--keep]
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agentd.protocol.jobs import CheckpointContract, JobSpec  # noqa: E402
from agentd.protocol.messages import Cancel, Hello, Migrate, Show, Submit  # noqa: E402
from agentd.transport.client import NodeClient, Unreachable  # noqa: E402
from agentd.transport.ports import free_listen_port  # noqa: E402

TRAINER = REPO / "tests" / "migration" / "ckpt_trainer.py"
MiB = 1 << 20
DOWNTIME_BUDGET_EXTRA_S = 1.0
THROUGHPUT_BUDGET_MIB_S = 300.0


def free_port() -> int:
    return free_listen_port("127.0.0.1")


class Agentd:
    def __init__(self, root: Path, node: str, extra_env: dict[str, str] | None = None) -> None:
        self.node = node
        self.state = root / f"state-{node}"
        self.ctl = f"tcp://127.0.0.1:{free_port()}"
        pub = f"tcp://127.0.0.1:{free_port()}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               **(extra_env or {})}
        self.log = open(root / f"{node}.log", "ab")  # noqa: SIM115 - the daemon writes it until stop() closes it
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from agentd.daemon import main; sys.exit(main(sys.argv[1:]))",
             "--state-dir", str(self.state), "--ctl", self.ctl, "--pub", pub, "--node-name", node,
             "--interval", "1", "--simulate-gpus", "1"],
            stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.call(Hello(), timeout_s=0.5)
                return
            except Unreachable:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"agentd {node} did not start; see {root / (node + '.log')}") from None

    def call(self, req, timeout_s: float = 10.0):
        with NodeClient(self.ctl, timeout_s=timeout_s, actor="bench") as c:
            return c.call(req)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        remove_node_cgroups(self.node)


def remove_node_cgroups(node: str, root: Path = Path("/sys/fs/cgroup")) -> None:
    """Remove the empty cgroup subtree the stopped agentd left in each hierarchy."""
    for own in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = own.split(":", 2)
        sub = root / ("unified" if controllers == "" else controllers.replace("name=", "")) / path.lstrip("/") / f"agentd-{node}"
        if sub.is_dir():
            for d in sorted((p for p in sub.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [sub]:
                try:
                    d.rmdir()
                except OSError:
                    pass


def parse_progress(path: Path) -> tuple[list[tuple[int, int, float]], list[tuple[float, int]]]:
    steps, ckpts = [], []
    for line in path.read_text().splitlines():
        p = line.split()
        if p and p[0] == "step" and len(p) >= 4:
            steps.append((int(p[1]), int(p[2]), float(p[3])))
        elif p and p[0] == "ckpt":
            ckpts.append((float(p[1]), int(p[2])))
    return steps, ckpts


def journal_times(db: Path, mid: str) -> dict[str, float]:
    """wall time of the first step of each source phase, plus 'written' (checkpoint written)
    and 'dump_s' (how long a CRIU dump took)."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("select phase, message, wall_s from job_migration_steps"
                           " where migration_id = ? and side = 'source' order by rowid", (mid,)).fetchall()
    finally:
        con.close()
    out: dict[str, float] = {}
    for phase, message, wall in rows:
        out.setdefault(phase, wall)
        if message.startswith("checkpoint written"):
            out["written"] = wall
        if message.startswith("CRIU image written in "):
            out["dump_s"] = float(message.split()[4])
    return out


def run_one(root: Path, a: Agentd, b: Agentd, size_mib: int, run: int, criu: bool = False) -> dict[str, float]:
    progress = root / f"progress-{size_mib}-{run}.txt"
    # With --criu the job has no contract and holds its state in memory; CRIU moves the process.
    state = {"HOLD_BYTES" if criu else "PAD_BYTES": str(size_mib * MiB)}
    spec = JobSpec(argv=[sys.executable, str(TRAINER), str(progress)], name=f"bench-{size_mib}",
                   env={"PROGRESS_FILE": str(progress), "STEP_S": "0.01", **state},
                   checkpoint=None if criu else CheckpointContract(signal="SIGUSR1", timeout_s=120))
    job = a.call(Submit(spec=spec)).job
    deadline = time.monotonic() + 30
    while not progress.exists() or len(progress.read_text().splitlines()) < 20:
        if time.monotonic() > deadline:
            raise RuntimeError(f"trainer {job.id} did not start on {a.node}")
        time.sleep(0.05)
    a.call(Migrate(job=job.id, target=b.ctl))
    deadline = time.monotonic() + 300
    while True:
        info = a.call(Show(job=job.id)).job
        if info.state == "migrated" or info.migration.get("phase") in ("rolled_back", "failed"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"migration of {job.id} did not finish: {info.migration}")
        time.sleep(0.02)
    if info.state != "migrated":
        raise RuntimeError(f"migration of {job.id} failed: {info.migration.get('reason')}")
    new = b.call(Show(job=info.migrated_to)).job
    migrated_at = time.time()
    deadline = time.monotonic() + 30
    while True:
        steps, ckpts = parse_progress(progress)
        on_b = [ts > migrated_at for _, _, ts in steps] if criu else [pid == new.pid for _, pid, _ in steps]
        if any(on_b):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{new.id} did not report on {b.node}")
        time.sleep(0.01)
    t = journal_times(a.state / "jobs.db", info.migration["id"])
    if criu:  # the same pid on both nodes: the downtime is the longest pause between two steps
        times = sorted(ts for _, _, ts in steps)
        gap, last_a = max((later - earlier, earlier) for earlier, later in itertools.pairwise(times))
        first_b = last_a + gap
    else:
        last_a = max(ts for _, pid, ts in steps if pid != new.pid)
        first_b = min(ts for _, pid, ts in steps if pid == new.pid)
    b.call(Cancel(job=new.id, grace_s=1))
    size = info.migration.get("bytes_total") or 0
    transfer_s = t["committing"] - t["transferring"]
    return {
        "size_mib": size_mib,
        "ckpt_write_s": t.get("dump_s", float("nan")) if criu else (ckpts[0][0] if ckpts else float("nan")),
        "downtime_s": first_b - last_a,
        "transfer_s": transfer_s,
        "commit_s": first_b - t["committing"],
        "throughput_mib_s": size / MiB / transfer_s if transfer_s > 0 else float("inf"),
    }


def prefault(path: Path, mib: int) -> None:
    block = os.urandom(MiB)
    t0 = time.monotonic()
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(block)
    path.unlink()
    print(f"prefaulted {mib} MiB of page cache in {time.monotonic() - t0:.1f} s", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-mib", default="1,100,1024", help="checkpoint sizes in MiB, comma-separated")
    ap.add_argument("--repeat", type=int, default=3, help="migrations per size; the table shows the median run (by throughput)")
    ap.add_argument("--criu", action="store_true",
                    help="jobs without a checkpoint contract holding SIZE in memory, moved with CRIU "
                         "($AGENTD_CRIU or /opt/fleetdeck-test/criu/criu); 'write' is then the dump")
    ap.add_argument("--keep", action="store_true", help="keep the temporary state directories")
    ap.add_argument("--prefault-mib", type=int, default=0,
                    help="first write and delete this much page cache, so the runs reuse memory the VM has "
                         "already backed (a fresh Firecracker guest pays ~2 ms per MiB on first touch)")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="fleetdeck-bench-migrate-"))
    if args.prefault_mib:
        prefault(root / "prefault", args.prefault_mib)
    a = b = None
    rows = []
    try:
        env = {"AGENTD_CRIU": os.environ.get("AGENTD_CRIU", "/opt/fleetdeck-test/criu/criu")} if args.criu else {}
        a, b = Agentd(root, "bench-a", env), Agentd(root, "bench-b", env)
        for size in [int(s) for s in args.sizes_mib.split(",") if s]:
            runs = []
            for run in range(max(1, args.repeat)):
                print(f"migrating a {size} MiB checkpoint ({run + 1}/{args.repeat})...", file=sys.stderr)
                runs.append(run_one(root, a, b, size, run, criu=args.criu))
            runs.sort(key=lambda r: r["throughput_mib_s"])
            median = dict(runs[len(runs) // 2])
            median["range"] = f"{runs[0]['throughput_mib_s']:.0f}–{runs[-1]['throughput_mib_s']:.0f}"
            rows.append(median)
    finally:
        for d in (a, b):
            if d is not None:
                d.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"median of {max(1, args.repeat)} runs per size (by throughput)\n")
    print("| checkpoint | write | downtime | overhead | pack+send | start on B | throughput | range | budget |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|:---|")
    ok_all = True
    for r in rows:
        overhead = r["downtime_s"] - r["ckpt_write_s"]
        verdict = ""
        if r["size_mib"] == 100 and not args.criu:  # the budgets are for checkpoints
            ok = overhead <= DOWNTIME_BUDGET_EXTRA_S and r["throughput_mib_s"] >= THROUGHPUT_BUDGET_MIB_S
            ok_all &= ok
            verdict = "ok" if ok else "MISSED"
        print(f"| {r['size_mib']} MiB | {r['ckpt_write_s']:.2f} s | {r['downtime_s']:.2f} s | {overhead:.2f} s | "
              f"{r['transfer_s']:.2f} s | {r['commit_s']:.2f} s | "
              f"{r['throughput_mib_s']:.0f} MiB/s | {r['range']} MiB/s | {verdict} |")
    print(f"\nbudget (100 MiB): downtime <= write + {DOWNTIME_BUDGET_EXTRA_S:g} s, pack+send >= {THROUGHPUT_BUDGET_MIB_S:g} MiB/s; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
