"""Acceptance of the straggler radar (issue 14), with real daemons and the radar's DEFAULT config.

Starts ``--nodes`` real agentd on loopback (CPU-only ranks, default sample interval, no
``[agentd.radar]`` overrides) and submits a ``--world``-rank group with ``agentctl submit --nodes
... --ranks-per-node K`` running examples/ring_trainer.py. Two parts:

1. straggler: rank ``--slow-rank`` (on a node that does not lead the group) computes
   ``--slow-factor`` (1.1) as much per step. Measured: wall seconds from the group's start (every
   rank running) until ``agentctl --json health GROUP``, polled each second, names that rank a
   straggler; and every other rank the radar ever flagged (polls and the leader's radar events).
2. healthy: the same group without a slow rank for ``--healthy-minutes`` (30). Every
   ``--poll-s`` it reads ``agentctl --json alerts`` and ``agentctl --json health GROUP``; the leader's
   radar events are collected too. Counted: straggler and rank_hung alerts, flagged ranks, events.

Why each rank gets ``--cpus`` (a CFS quota) and a fixed amount of work: 16 ranks on a shared
2-core host cannot each have a core. Without limits all 16 compute at once, share the cores, and a
rank doing 10% more work only delays the group by that 10% run alone at the end of the step
(about 1/8 of 10%): the others barely wait on it, so it is not a straggler in the issue's sense
(and the radar rightly says nothing). A per-rank quota gives each rank its own fixed share, as a
GPU gives each rank its own device: then 10% more work is 10% more wall time per step and the
others wait on it. The quota is 0.025 core (2.5 ms per 100 ms CFS period) and the work
``--compute-ms`` 40 ms of CPU per step: a compute phase of about 1.6 s, so the CFS period's
granularity (at most 100 ms per step) stays well under the radar's 8% excess, 16 ranks ask for
at most 0.4 core in all (moderate on a shared host), and there are 3 steps per 5 s radar slice.
All-reduce waits block in select, they do not spin. The work is given as ``--work-units``
calibrated here (rank 0's own calibration would run under its quota and time the throttling).

    .venv/bin/python bench/radar_acceptance.py [--healthy-minutes 30] [--skip-straggler] [--skip-healthy]

Writes only under a temporary directory (removed unless ``--keep``); stops every rank and
daemon it started, by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agentd.protocol.messages import Snapshot, SnapshotReply  # noqa: E402
from agentd.transport.client import NodeClient, Unreachable  # noqa: E402
from agentd.transport.ports import free_listen_port  # noqa: E402

RING = REPO / "examples" / "ring_trainer.py"
FLAGS = ("straggler", "hung")
RULES = ("straggler", "rank_hung")


def cpu_ms_per_unit() -> float:
    """CPU milliseconds of one ring_trainer work unit on this host (best of 5)."""
    sys.path.insert(0, str(REPO / "examples"))
    import ring_trainer  # type: ignore[import-not-found]  # examples/ is no package

    best = float("inf")
    for _ in range(5):
        c0 = time.process_time()
        ring_trainer.work(100)
        best = min(best, (time.process_time() - c0) / 100 * 1000)
    return best


def host_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole host, from /proc/stat."""
    vals = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


class Daemon:
    """One real agentd on free loopback ports, its state under ``root``."""

    def __init__(self, root: Path, node: str) -> None:
        self.node = node
        self.ctl = f"tcp://127.0.0.1:{free_listen_port('127.0.0.1')}"
        pub = f"tcp://127.0.0.1:{free_listen_port('127.0.0.1')}"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(root / f"{node}.log", "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "agentd.daemon", "--state-dir", str(root / f"state-{node}"),
                                          "--ctl", self.ctl, "--pub", pub, "--node-name", node],
                                         stdout=subprocess.DEVNULL, stderr=log, env=env)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        with NodeClient(self.ctl, timeout_s=0.5) as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"agentd {self.node} exited with {self.proc.returncode}")
                try:
                    c.hello()
                    return
                except Unreachable:
                    time.sleep(0.2)
        raise TimeoutError(f"agentd {self.node} did not answer within {timeout_s} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class Cluster:
    root: Path
    daemons: list[Daemon] = field(default_factory=list)
    rank_pids: set[int] = field(default_factory=set)
    running: str = ""  # the group submitted and not yet stopped

    @property
    def file(self) -> Path:
        return self.root / "cluster.toml"

    def start(self, n: int) -> None:
        self.daemons = [Daemon(self.root, f"n{i}") for i in range(n)]
        for d in self.daemons:
            d.wait_ready()
        self.file.write_text("".join(f'[[node]]\nname = "{d.node}"\nendpoint = "{d.ctl}"\n\n' for d in self.daemons))

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "agentd.cli", "--cluster", str(self.file), *args],
                              capture_output=True, text=True, timeout=timeout, check=False,
                              env={**os.environ, "PYTHONPATH": str(REPO)})

    def ctl_json(self, *args: str) -> Any:
        out = self.ctl("--json", *args)
        if out.returncode != 0:
            raise RuntimeError(f"agentctl {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")
        return json.loads(out.stdout)

    def group_row(self, gid: str) -> dict[str, Any] | None:
        row = next((r for r in self.ctl_json("jobs") if r.get("kind") == "group" and r["id"] == gid), None)
        for r in (row or {}).get("rank_jobs", []):
            if r.get("pid"):
                self.rank_pids.add(int(r["pid"]))
        return row

    def radar_events(self, gid: str) -> list[dict[str, Any]]:
        """The leader's (node 0's) recent radar events about group ``gid``."""
        with NodeClient(self.daemons[0].ctl, timeout_s=10) as c:
            reply = c.call(Snapshot(history=0))
        assert isinstance(reply, SnapshotReply)
        return [{"wall_s": e.wall_s, **e.data} for e in reply.events
                if e.kind == "radar" and e.data.get("group") == gid]

    def stop_group(self, gid: str) -> None:
        self.ctl("cancel", gid, "--grace", "2")
        self.running = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in self.rank_pids):
            time.sleep(0.5)
        for p in self.rank_pids:
            if _alive(p):
                os.kill(p, signal.SIGKILL)

    def close(self) -> None:
        if self.running:  # ranks outlive agentd by design: cancel them first
            self.stop_group(self.running)
        for d in self.daemons:
            d.stop()
        for p in self.rank_pids:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def submit(c: Cluster, args: argparse.Namespace, units: int, slow_rank: int, name: str) -> str:
    ring = [sys.executable, str(RING), "--steps", "1000000", "--work-units", str(units), "--peer-timeout", "300"]
    if slow_rank >= 0:
        ring += ["--slow-rank", str(slow_rank), "--slow-factor", str(args.slow_factor)]
    nodes = ",".join(d.node for d in c.daemons)
    out = c.ctl("submit", "--nodes", nodes, "--ranks-per-node", str(args.world // len(c.daemons)),
                "--cpus", str(args.cpus), "--name", name, "--", *ring)
    if out.returncode != 0:
        raise RuntimeError(f"agentctl submit failed: {out.stderr.strip()}")
    c.running = out.stdout.strip().splitlines()[0]
    return c.running


def set_cfs_period(c: Cluster, gid: str, cpus: float, period_ms: float) -> int:
    """Rewrite every rank's CPU quota as ``cpus`` of a ``period_ms`` CFS period (agentd uses
    100 ms): the same share, handed out in smaller slices, so a few percent more CPU per step is
    a few percent more wall time rather than one more whole period. Returns the ranks changed."""
    period_us = int(period_ms * 1000)
    quota_us = int(cpus * period_us)
    if quota_us < 1000:
        raise SystemExit(f"--cfs-period-ms {period_ms}: a quota of {cpus} core is {quota_us} us per period, "
                         "under the kernel's 1000 us minimum; use a longer period or more --cpus")
    changed = 0
    for r in (c.group_row(gid) or {}).get("rank_jobs", []):
        pid = r.get("pid")
        if not pid:
            continue
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            rel = path.lstrip("/")
            if controllers == "":  # cgroup v2: the unified mount (hybrid) or the root (v2 only)
                for root in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
                    if (root / rel / "cpu.max").exists():
                        (root / rel / "cpu.max").write_text(f"{quota_us} {period_us}")
                        changed += 1
                        break
            elif "cpu" in controllers.split(","):
                d = Path("/sys/fs/cgroup") / controllers / rel
                if (d / "cpu.cfs_quota_us").exists():
                    (d / "cpu.cfs_quota_us").write_text("-1")  # the period may not go under the quota
                    (d / "cpu.cfs_period_us").write_text(str(period_us))
                    (d / "cpu.cfs_quota_us").write_text(str(quota_us))
                    changed += 1
    return changed


def wait_running(c: Cluster, gid: str, world: int, timeout_s: float = 120) -> float:
    """Monotonic time at which every rank of ``gid`` was first seen running (polled each 0.5 s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = c.group_row(gid)
        ranks = (row or {}).get("rank_jobs", [])
        if len(ranks) == world and all(r.get("state") == "running" for r in ranks):
            return time.monotonic()
        time.sleep(0.5)
    raise TimeoutError(f"group {gid} did not have {world} running ranks within {timeout_s} s: {row}")


def health(c: Cluster, gid: str) -> dict[int, dict[str, Any]]:
    out = c.ctl("--json", "health", gid, timeout=30)
    if out.returncode != 0:
        return {}
    return {int(r["rank"]): r for r in json.loads(out.stdout)}


def steps(c: Cluster, gid: str) -> int:
    row = c.group_row(gid) or {}
    return min((int(r.get("metrics", {}).get("step", 0)) for r in row.get("rank_jobs", [])), default=0)


def rank_metrics(c: Cluster, gid: str) -> dict[int, tuple[float, float]]:
    """Each rank's last reported step: (compute wall seconds, compute CPU milliseconds)."""
    row = c.group_row(gid) or {}
    out: dict[int, tuple[float, float]] = {}
    for r in row.get("rank_jobs", []):
        m = r.get("metrics", {})
        if "step_compute_s" in m and "step_cpu_s" in m:
            out[int(r["rank"])] = (float(m["step_compute_s"]), float(m["step_cpu_s"]) * 1000)
    return out


def what_it_saw(samples: list[tuple[float, dict[int, tuple[float, float]]]], rank: int, at_s: float) -> str:
    """The flagged rank's compute (wall, CPU) against the others', over the polls of the 40 s before ``at_s``."""
    near = [m for t, m in samples if at_s - 40 <= t <= at_s]
    mine = [m[rank] for m in near if rank in m]
    rest = [v for m in near for r, v in m.items() if r != rank]
    if not mine or not rest:
        return "no per-rank reports around the flag"
    return (f"its compute {statistics.fmean(v[0] for v in mine):.3f} s wall / {statistics.fmean(v[1] for v in mine):.1f} ms "
            f"CPU per step vs the others' median {statistics.median(v[0] for v in rest):.3f} s / "
            f"{statistics.median(v[1] for v in rest):.1f} ms ({len(near)} polls)")


def straggler_part(c: Cluster, args: argparse.Namespace, units: int) -> dict[str, Any]:
    slow = args.slow_rank if args.slow_rank >= 0 else args.world // len(c.daemons) + 1  # on node 1, not the leader
    gid = submit(c, args, units, slow, "radar-slow")
    b0 = host_cpu()
    t0 = wait_running(c, gid, args.world)
    if args.cfs_period_ms:
        print(f"{set_cfs_period(c, gid, args.cpus, args.cfs_period_ms)} ranks: {args.cpus} core per "
              f"{args.cfs_period_ms:g} ms CFS period", file=sys.stderr, flush=True)
    named_s: float | None = None
    others: dict[int, str] = {}
    verdict: dict[str, Any] = {}
    deadline = t0 + args.straggler_timeout_s
    while time.monotonic() < deadline:
        h = health(c, gid)
        for rank, r in h.items():
            if r.get("status") in FLAGS and rank != slow:
                others.setdefault(rank, f"{r['status']}: {r.get('reason', '')}")
        if h.get(slow, {}).get("status") == "straggler":
            named_s, verdict = time.monotonic() - t0, h[slow]
            break
        time.sleep(1.0)
    if named_s is not None:  # a few more polls: does anyone else get flagged alongside it?
        for _ in range(10):
            time.sleep(1.0)
            for rank, r in health(c, gid).items():
                if r.get("status") in FLAGS and rank != slow:
                    others.setdefault(rank, f"{r['status']}: {r.get('reason', '')}")
    last = health(c, gid)
    events = c.radar_events(gid)
    for e in events:
        if e.get("status") in FLAGS and e.get("rank") != slow:
            others.setdefault(int(e["rank"]), f"event {e['status']}: {e.get('reason', '')}")
    done = steps(c, gid)
    b1 = host_cpu()
    c.stop_group(gid)
    return {"group": gid, "slow_rank": slow, "named_after_s": None if named_s is None else round(named_s, 1),
            "others_flagged": others, "verdict": verdict, "last_health": {k: v.get("status") for k, v in last.items()},
            "last_evidence": {k: v.get("evidence") for k, v in last.items() if v.get("evidence")},
            "radar_events": events, "steps": done, "host_cpu_busy": round((b1[0] - b0[0]) / (b1[1] - b0[1]), 3)}


def healthy_part(c: Cluster, args: argparse.Namespace, units: int) -> dict[str, Any]:
    gid = submit(c, args, units, -1, "radar-healthy")
    b0 = host_cpu()
    t0 = wait_running(c, gid, args.world)
    if args.cfs_period_ms:
        print(f"{set_cfs_period(c, gid, args.cpus, args.cfs_period_ms)} ranks: {args.cpus} core per "
              f"{args.cfs_period_ms:g} ms CFS period", file=sys.stderr, flush=True)
    end = t0 + args.healthy_minutes * 60
    polls = flagged_polls = 0
    alerts_seen: dict[str, dict[str, Any]] = {}  # key -> first sighting, radar rules only
    other_alerts: set[str] = set()
    flags: dict[int, str] = {}
    events: dict[tuple[float, int, str], dict[str, Any]] = {}
    statuses: dict[str, int] = {}
    next_events = 0.0
    samples: list[tuple[float, dict[int, tuple[float, float]]]] = []  # per poll: each rank's last step
    while time.monotonic() < end:
        polls += 1
        samples.append((time.monotonic() - t0, rank_metrics(c, gid)))
        h = health(c, gid)
        bad = {r: v for r, v in h.items() if v.get("status") in FLAGS}
        flagged_polls += bool(bad)
        for v in h.values():
            statuses[str(v.get("status"))] = statuses.get(str(v.get("status")), 0) + 1
        for r, v in bad.items():
            if r not in flags:
                flags[r] = (f"{v['status']} at {time.monotonic() - t0:.0f} s: {v.get('reason', '')} {v.get('evidence')}; "
                            + what_it_saw(samples, r, time.monotonic() - t0))
        for a in c.ctl_json("alerts"):
            key = f"{a.get('rule')} {a.get('node')} {a.get('subject')}"
            if a.get("rule") in RULES:
                alerts_seen.setdefault(key, {**a, "seen_at_s": round(time.monotonic() - t0)})
            else:
                other_alerts.add(key)
        if time.monotonic() >= next_events:  # events between polls (the snapshot keeps recent ones)
            next_events = time.monotonic() + 60
            for e in c.radar_events(gid):
                events[(e["wall_s"], int(e["rank"]), str(e["status"]))] = e
        if args.progress:
            print(f"[{time.monotonic() - t0:6.0f} s] polls {polls}, flagged polls {flagged_polls}, radar alerts "
                  f"{len(alerts_seen)}, events {len(events)}", file=sys.stderr, flush=True)
        time.sleep(args.poll_s)
    for e in c.radar_events(gid):
        events[(e["wall_s"], int(e["rank"]), str(e["status"]))] = e
    done = steps(c, gid)
    b1 = host_cpu()
    elapsed = time.monotonic() - t0
    c.stop_group(gid)
    return {"group": gid, "minutes": round(elapsed / 60, 1), "polls": polls, "flagged_polls": flagged_polls,
            "ranks_flagged": flags, "radar_alerts": list(alerts_seen.values()), "other_alerts": sorted(other_alerts),
            "radar_events": list(events.values()), "status_counts": statuses, "steps": done,
            "step_s": round(elapsed / done, 3) if done else None,
            "host_cpu_busy": round((b1[0] - b0[0]) / (b1[1] - b0[1]), 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--nodes", type=int, default=4, help="agentd daemons (default 4)")
    p.add_argument("--world", type=int, default=16, help="ranks in the group, spread evenly (default 16)")
    p.add_argument("--compute-ms", type=float, default=40.0, help="CPU milliseconds of work per step per rank (40)")
    p.add_argument("--cpus", type=float, default=0.025, help="each rank's CPU quota in cores (0.025)")
    p.add_argument("--cfs-period-ms", type=float, default=0.0,
                   help="hand the quota out per this CFS period instead of agentd's 100 ms (e.g. 20 with --cpus 0.05)")
    p.add_argument("--slow-rank", type=int, default=-1, help="the slow rank (default: the second rank of node 1)")
    p.add_argument("--slow-factor", type=float, default=1.1)
    p.add_argument("--straggler-timeout-s", type=float, default=180.0, help="give up naming after this (180)")
    p.add_argument("--healthy-minutes", type=float, default=30.0)
    p.add_argument("--poll-s", type=float, default=10.0, help="seconds between polls in the healthy run (10)")
    p.add_argument("--skip-straggler", action="store_true")
    p.add_argument("--skip-healthy", action="store_true")
    p.add_argument("--progress", action="store_true", help="a line per poll of the healthy run on stderr")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (daemon logs, state)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still cleans up (the finally below)
    if args.world % args.nodes:
        p.error(f"--world {args.world} is not a multiple of --nodes {args.nodes}")
    per_unit = cpu_ms_per_unit()
    units = max(1, round(args.compute_ms / per_unit))
    root = Path(tempfile.mkdtemp(prefix="radar-acceptance-"))
    c = Cluster(root)
    result: dict[str, Any] = {"nodes": args.nodes, "world": args.world, "cpus_per_rank": args.cpus, "cfs_period_ms": args.cfs_period_ms or 100.0,
                              "compute_ms": args.compute_ms, "work_units": units, "cpu_ms_per_unit": round(per_unit, 4)}
    try:
        c.start(args.nodes)
        if not args.skip_straggler:
            result["straggler"] = s = straggler_part(c, args, units)
            print(f"straggler: rank {s['slow_rank']} named after {s['named_after_s']} s from the group's start "
                  f"(class {s['verdict'].get('class')}; evidence {s['verdict'].get('evidence')}); other ranks flagged: "
                  f"{s['others_flagged'] or 'none'}; {s['steps']} steps; host CPU busy {s['host_cpu_busy']:.0%}",
                  flush=True)
        if not args.skip_healthy:
            result["healthy"] = h = healthy_part(c, args, units)
            print(f"healthy: {h['minutes']} min, {h['steps']} steps ({h['step_s']} s/step), {h['polls']} polls; "
                  f"polls with a flagged rank {h['flagged_polls']}, radar alerts {len(h['radar_alerts'])}, radar events "
                  f"{len(h['radar_events'])}, ranks flagged {h['ranks_flagged'] or 'none'}; other alerts "
                  f"{h['other_alerts'] or 'none'}; host CPU busy {h['host_cpu_busy']:.0%}", flush=True)
        print(json.dumps(result, indent=1, default=str))
    finally:
        c.close()
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
