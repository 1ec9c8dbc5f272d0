"""What a relay costs as its fleet grows, beside what the simulated fleet itself costs.

    .venv/bin/python bench/relay_scale.py                          # 100 and 1,000 nodes, one relay
    .venv/bin/python bench/relay_scale.py --sizes 100 --duration 20
    .venv/bin/python bench/relay_scale.py --two-level 10000 --children 4
    .venv/bin/python bench/relay_scale.py --profile 100            # cProfile of the relay, top 25

Each scenario starts real processes and stops them by pid: ``python -m agentd.simulate K``
(K SIMULATED nodes on real loopback sockets, samples at 1 Hz) and ``agentd --relay`` following
the simulator's cluster file (the relay also samples its own node at 1 Hz, one simulated GPU).
``--two-level N`` splits N nodes over ``--children`` simulator processes, one child relay
following each, and one top relay following the children: the shape of a 10,000-node cluster.

Measured between the end of a warm-up (every node live at the top relay, then
``--warmup`` s) and the end of ``--duration`` s: CPU % of one core from /proc/PID/stat
(utime + stime of all threads), RSS at the end (VmRSS) and at its peak (VmHWM), per process.
Budget (issue 15): a relay following 100 nodes <= 10 % of a core.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agentd.protocol.relay import Nodes, NodesReply  # noqa: E402  (after the sys.path line above)
from agentd.transport.client import ClientError, NodeClient  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Proc:
    role: str
    popen: subprocess.Popen[bytes]
    ctl: str = ""

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rss_mib(self) -> tuple[float, float]:
        status = dict(line.split(":", 1) for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines() if ":" in line)
        return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def _free_port() -> int:
    from agentd.transport.ports import free_listen_port

    return free_listen_port("127.0.0.1")


def start_sim(tmp: Path, k: int, prefix: str) -> tuple[Proc, Path]:
    cluster = tmp / f"{prefix}.toml"
    p = subprocess.Popen([sys.executable, "-m", "agentd.simulate", str(k), "--cluster-out", str(cluster),
                          "--prefix", prefix], cwd=REPO, stdout=subprocess.DEVNULL,
                         stderr=open(tmp / f"{prefix}.sim.log", "wb"))  # noqa: SIM115  (the child keeps it)
    deadline = time.monotonic() + 300
    while not cluster.exists():
        if p.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"simulator {prefix} did not start: {(tmp / f'{prefix}.sim.log').read_text()[-2000:]}")
        time.sleep(0.1)
    return Proc(f"simulator ({k} nodes)", p), cluster


def start_relay(tmp: Path, cluster: Path, name: str, role: str, profile: Path | None = None) -> Proc:
    ctl = f"tcp://127.0.0.1:{_free_port()}"
    pub = f"tcp://127.0.0.1:{_free_port()}"
    state = tmp / f"state-{name}"
    state.mkdir()
    pre = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m"] if profile else [sys.executable, "-m"]
    p = subprocess.Popen([*pre, "agentd.daemon", "--state-dir", str(state), "--ctl", ctl, "--pub", pub,
                          "--node-name", name, "--interval", "1.0", "--simulate-gpus", "1", "--relay", str(cluster)],
                         cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(tmp / f"{name}.log", "wb"))  # noqa: SIM115
    return Proc(role, p, ctl)


def wait_live(relay: Proc, want: int, timeout_s: float) -> float:
    start = time.monotonic()
    live = 0
    while time.monotonic() - start < timeout_s:
        try:
            with NodeClient(relay.ctl, timeout_s=30) as c:
                reply = c.call(Nodes())
            assert isinstance(reply, NodesReply)
            live = sum(1 for n in reply.nodes if n.link == "live")
            if live >= want:
                return time.monotonic() - start
        except ClientError:
            pass
        time.sleep(1.0)
    raise SystemExit(f"{relay.role}: {live} of {want} nodes live after {timeout_s:g} s")


def measure(procs: list[Proc], duration_s: float) -> list[tuple[str, float, float, float]]:
    before = {id(p): p.cpu_s() for p in procs}
    t0 = time.monotonic()
    time.sleep(duration_s)
    dt = time.monotonic() - t0
    out = []
    for p in procs:
        rss, hwm = p.rss_mib()
        out.append((p.role, 100.0 * (p.cpu_s() - before[id(p)]) / dt, rss, hwm))
    return out


def scenario(label: str, sims: list[tuple[int, str]], two_level: bool, args: argparse.Namespace) -> list[str]:
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="relay-scale-") as tmpd:
        tmp = Path(tmpd)
        try:
            clusters = []
            for k, prefix in sims:
                sim, cluster = start_sim(tmp, k, prefix)
                procs.append(sim)
                clusters.append(cluster)
            total = sum(k for k, _ in sims)
            if two_level:
                children = [start_relay(tmp, c, f"child-{i + 1}", f"child relay {i + 1} ({k} nodes)")
                            for i, (c, (k, _)) in enumerate(zip(clusters, sims))]
                procs += children
                top_file = tmp / "top.toml"
                top_file.write_text("".join(f'[[node]]\nname = "child-{i + 1}"\nendpoint = "{c.ctl}"\n\n'
                                            for i, c in enumerate(children)))
                top = start_relay(tmp, top_file, "top", f"top relay ({len(children)} children)")
                procs.append(top)
                want = total + len(children) + 1
            else:
                prof = Path(args.profile_out) if args.profile else None
                top = start_relay(tmp, clusters[0], "relay", f"relay ({total} nodes)", prof)
                procs.append(top)
                want = total + 1
            took = wait_live(top, want, args.start_timeout)
            print(f"{label}: {want} nodes live at the top relay after {took:.0f} s; warming up", file=sys.stderr)
            time.sleep(args.warmup)
            rows = measure(procs, args.duration)
        finally:
            for p in reversed(procs):
                p.stop()
    lines = [f"| {label} | {role} | {cpu:.1f} % | {rss:.0f} MiB | {hwm:.0f} MiB |" for role, cpu, rss, hwm in rows]
    for line in lines:
        print(line, flush=True)
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="*", default=[100, 1000], help="one relay following K nodes, each K")
    p.add_argument("--two-level", type=int, default=0, metavar="N", help="also N nodes through two relay levels")
    p.add_argument("--children", type=int, default=4, help="child relays (and simulators) for --two-level")
    p.add_argument("--duration", type=float, default=30.0, help="seconds measured per scenario")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds after every node is live, before measuring")
    p.add_argument("--start-timeout", type=float, default=600.0)
    p.add_argument("--profile", action="store_true", help="run the (one-level) relay under cProfile")
    p.add_argument("--profile-out", default="/tmp/relay.prof")
    args = p.parse_args()
    print(f"host: {platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; python {platform.python_version()}")
    print("| scenario | process | CPU (% of a core) | RSS end | RSS peak |")
    print("|---|---|---|---|---|")
    for k in args.sizes:
        scenario(f"{k:,} nodes, one relay", [(k, "sim")], False, args)
    if args.two_level:
        per = args.two_level // args.children
        scenario(f"{per * args.children:,} nodes, two levels", [(per, f"s{i + 1}") for i in range(args.children)], True, args)
    if args.profile:
        import pstats

        pstats.Stats(args.profile_out).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
