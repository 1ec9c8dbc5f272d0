"""What agentd costs a node, beside what naive tools cost, and how fresh its stream is.

    .venv/bin/python bench/agentd_overhead.py                       # 60 s, prints markdown
    .venv/bin/python bench/agentd_overhead.py --duration 20         # quicker
    .venv/bin/python bench/agentd_overhead.py --append-docs docs/benchmarks.md

Setup (all cleaned up at the end, processes by pid, jobs through Cancel):
- ``--idle`` (300) idle ``sleep`` children, so a full process scan has a realistic host to read;
- ``--busy`` (8) busy jobs submitted through agentd's own ``Submit`` request, each a shell
  spin loop capped by its JobSpec to ``--busy-cpus`` (0.05) of a core: agentd creates their
  cgroups (v1 cpu/cpuacct/memory/freezer beneath its own cgroup, or v2) and reads them every
  tick as in production. The cap keeps the bench from starving the other users of a small
  shared machine; agentd's cost does not depend on how busy a cgroup is, only on how many
  there are. The jobs get throttled, so their throttling counters move too.

Phase 1, overhead (``--duration`` s, 60 by default), all of these at once:
- agentd at 1 Hz with 2 simulated GPUs, with one NodeLink subscriber attached (an app or
  recorder is attached in production, so serialising and publishing is part of the cost);
- (a) a plain psutil loop at 1 Hz: ``process_iter`` with name, cpu_percent and memory_info
  for every process, the floor that naive per-process tools pay;
- (b) glances (``--glances PATH``, default: ``glances`` on PATH or /tmp/glances-venv) with
  ``--stdout cpu.total -t 1`` (it still updates all its default plugins every second).
Each is measured from /proc/PID/stat (utime+stime of all its threads) and /proc/PID/status
(VmRSS at the end, VmHWM the peak) between the end of a warm-up and the end of the run.

Why concurrently rather than one after another: this machine is small and shared, so its
background load changes minute to minute; run side by side, all three see the same load,
the same process count and the same cache pressure, so their *ratio* is fair even when the
absolute figures are noisy. The cost is some contention between them, which at ~1-5 % of a
core each is small against the machine's capacity.

Phase 2, stream latency: a second agentd at ``--latency-interval`` (0.2 s), with the idle
processes and busy jobs still there but psutil and glances stopped; a NodeLink subscriber records ``time.time() - sample.wall_s`` for each SampleMsg (the
daemon stamps wall_s when it starts sampling, so this is sample -> decoded on the client,
collection time included), until ``--latency-samples`` (300) arrive. Phase 1's 1 Hz latencies
are reported too.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agentd.daemon import HISTORY_SAMPLES  # noqa: E402
from agentd.metrics.samples import NodeSample  # noqa: E402
from agentd.protocol.jobs import JobSpec  # noqa: E402
from agentd.protocol.messages import Cancel, Jobs, SampleMsg, Submit  # noqa: E402
from agentd.transport.client import LinkMessage, NodeLink, RemoteError, Unreachable  # noqa: E402
from tests.agentd_proc import AgentdProc, start_agentd  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
DOCS_HEADING = "## agentd overhead and stream latency"
DOCS_MARKER = "<!-- end of bench/agentd_overhead.py output; notes below are kept on re-runs -->"
GLANCES_VENV = Path("/tmp/glances-venv/bin/glances")

BUDGET_CPU_PCT = 1.0        # of one core, at 1 Hz
BUDGET_RSS_MIB = 40.0
BUDGET_VS_GLANCES = 0.25    # agentd's CPU at most a quarter of glances'
BUDGET_P99_MS = 20.0
KEEP_SAMPLES = 60

PSUTIL_LOOP = """
import sys, time, psutil
period = float(sys.argv[1])
nxt = time.monotonic()
while True:
    for p in psutil.process_iter(["name", "cpu_percent", "memory_info"]):
        pass  # process_iter(attrs) already read every attribute of every process
    nxt += period
    time.sleep(max(0.0, nxt - time.monotonic()))
"""


# ---- /proc readers ---------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of all threads of ``pid`` (seconds)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rfind(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


@dataclass
class Subject:
    """One measured process."""

    name: str
    pid: int
    proc: subprocess.Popen | None = None
    cpu0: float = 0.0
    t0: float = 0.0
    cpu_pct: float = float("nan")
    rss_mib: float = float("nan")
    hwm_mib: float = float("nan")
    note: str = ""
    history_mib: float = float("nan")  # what the rest of agentd's sample history will add

    def alive(self) -> bool:
        return self.proc is None or self.proc.poll() is None

    def start_window(self) -> None:
        self.cpu0, self.t0 = cpu_seconds(self.pid), time.monotonic()

    def end_window(self) -> None:
        cpu1, t1 = cpu_seconds(self.pid), time.monotonic()
        self.cpu_pct = 100.0 * (cpu1 - self.cpu0) / (t1 - self.t0)
        rss, hwm = memory_kib(self.pid)
        self.rss_mib, self.hwm_mib = rss / 1024, hwm / 1024


# ---- stream latency --------------------------------------------------------------------

@dataclass
class LatencyProbe:
    """A NodeLink subscriber on its own thread (the one thread that owns the link)."""

    ctl: str
    wanted: int = 0  # stop after this many samples (0: run until stop())
    latencies_ms: list[float] = field(default_factory=list)
    scan_tick: list[bool] = field(default_factory=list)  # the sample carries a process scan
    samples: list[NodeSample] = field(default_factory=list)  # the last few, for the history estimate
    error: str = ""

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="latency-probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        link = NodeLink(self.ctl, history=0)
        try:
            while not self._stop.is_set():
                for ev in link.poll(0.2):
                    now = time.time()
                    if isinstance(ev, LinkMessage) and isinstance(ev.msg, SampleMsg):
                        self.latencies_ms.append((now - ev.msg.sample.wall_s) * 1000.0)
                        self.scan_tick.append(bool(ev.msg.sample.procs))
                        self.samples = self.samples[-(KEEP_SAMPLES - 1):] + [ev.msg.sample]
                if self.wanted and len(self.latencies_ms) >= self.wanted:
                    break
        except Exception as exc:  # noqa: BLE001 - reported in the table, never a hang
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            link.close()
            self.done.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)


def history_bytes_per_sample(samples: list[NodeSample]) -> tuple[float, float]:
    """Python heap bytes one held NodeSample of this workload costs (agentd keeps
    HISTORY_SAMPLES of them for late joiners, so its RSS grows until that deque is full),
    and the bytes it takes encoded as msgpack."""
    if not samples:
        return float("nan"), float("nan")
    blobs = [msgspec.msgpack.encode(s) for s in samples]
    tracemalloc.start()
    try:
        held = [msgspec.msgpack.decode(b, type=NodeSample) for b in blobs]
        used, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del held
    return used / len(blobs), sum(map(len, blobs)) / len(blobs)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


# ---- the run ---------------------------------------------------------------------------

def find_glances(given: str | None) -> str | None:
    if given:
        return given
    found = shutil.which("glances")
    if found:
        return found
    return str(GLANCES_VENV) if GLANCES_VENV.exists() else None


def submit_busy(agent: AgentdProc, count: int, cpus: float) -> tuple[list[str], str]:
    """Submit ``count`` capped spin loops through agentd; returns (job ids, problem or '')."""
    ids: list[str] = []
    with agent.client(timeout_s=10.0) as c:
        for i in range(count):
            spec = JobSpec(argv=["/bin/sh", "-c", "while :; do :; done"], name=f"busy-{i}", cpus=cpus)
            try:
                ids.append(c.call(Submit(spec=spec)).job.id)  # type: ignore[attr-defined]
            except (RemoteError, Unreachable) as exc:
                return ids, f"submit of busy-{i} failed: {exc}"
        # Wait until they run, so the window measures steady state.
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            jobs = c.call(Jobs(active_only=True)).jobs  # type: ignore[attr-defined]
            running = [j for j in jobs if j.id in ids and j.state == "running"]
            if len(running) == len(ids):
                control = {getattr(j, "control", "") for j in running} - {""}
                return ids, f"control: {', '.join(sorted(control))}" if control else ""
            time.sleep(0.2)
    return ids, f"only some of {count} busy jobs were running after 20 s"


def cancel_all(agent: AgentdProc, ids: list[str]) -> None:
    with agent.client(timeout_s=15.0) as c:
        for job in ids:
            try:
                c.call(Cancel(job=job, grace_s=1.0))
            except (RemoteError, Unreachable) as exc:
                print(f"warning: cancel {job}: {exc}", file=sys.stderr)


def stop_proc(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def run(args: argparse.Namespace) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="agentd-overhead-"))
    idle: list[subprocess.Popen] = []
    tools: list[subprocess.Popen] = []
    subjects: list[Subject] = []
    agents: list[AgentdProc] = []
    job_ids: list[str] = []
    notes: list[str] = []
    probe1: LatencyProbe | None = None
    lat2: LatencyProbe | None = None
    try:
        for _ in range(args.idle):
            idle.append(subprocess.Popen(["sleep", "100000"], stdin=subprocess.DEVNULL))
        if args.only in ("all", "overhead"):
            agent = start_agentd(tmp, node="bench", simulate_gpus=2, interval=1.0)
            agent_started = time.monotonic()
            agents.append(agent)
            job_ids, problem = submit_busy(agent, args.busy, args.busy_cpus)
            notes.append(f"{len(job_ids)} busy jobs submitted through agentd, each capped at {args.busy_cpus:g} CPU "
                         f"({problem or 'all running'})")
            probe1 = LatencyProbe(agent.ctl)
            subjects.append(Subject("agentd (1 Hz, 2 sim GPUs, 1 subscriber)", agent.pid, agent.proc))

            ps = subprocess.Popen([sys.executable, "-c", PSUTIL_LOOP, "1.0"], stdin=subprocess.DEVNULL)
            tools.append(ps)
            subjects.append(Subject("psutil full scan, 1 Hz", ps.pid, ps))

            glances = None if args.no_glances else find_glances(args.glances)
            if args.no_glances:
                notes.append("glances: not run (--no-glances)")
            elif glances is None:
                notes.append("glances: not measured (not installed; `python3 -m venv /tmp/glances-venv && "
                             "/tmp/glances-venv/bin/pip install glances`, or pass --glances PATH)")
            else:
                env = {**os.environ, "HOME": str(tmp)}  # its config and log stay in the temp dir
                with open(tmp / "glances.err", "wb") as err:
                    g = subprocess.Popen([glances, "--stdout", "cpu.total", "-t", "1"], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err, env=env)
                tools.append(g)
                subjects.append(Subject(f"glances --stdout cpu.total -t 1 ({glances_version(glances)})", g.pid, g))

            time.sleep(args.warmup)
            for s in list(subjects):
                if not s.alive():
                    notes.append(f"{s.name}: exited during warm-up (rc {s.proc.returncode if s.proc else '?'}); not measured")
                    subjects.remove(s)
            nproc = sum(1 for n in os.listdir("/proc") if n.isdigit())
            load0 = os.getloadavg()[0]
            for s in subjects:
                s.start_window()
            time.sleep(args.duration)
            for s in subjects:
                if s.alive():
                    s.end_window()
                else:
                    s.note = "exited during the run"
            probe1.stop()
            held = min(HISTORY_SAMPLES, int(time.monotonic() - agent_started) + 1)
            per_sample, encoded = history_bytes_per_sample(probe1.samples)
            # agentd keeps its history encoded (msgpack bytes), not as decoded structs.
            subjects[0].history_mib = (HISTORY_SAMPLES - held) * encoded / MIB
            notes.append(f"agentd holds its last {HISTORY_SAMPLES} samples for late joiners, encoded as msgpack "
                         f"({encoded / 1024:.1f} KiB each here, against {per_sample / 1024:.1f} KiB as decoded structs); "
                         f"it held ~{held} at the end of the window, so the full history adds "
                         f"~{subjects[0].history_mib:.1f} MiB")
            notes.append(f"{nproc} processes on the host during the window; load average {load0:.1f} -> "
                         f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other users share this machine)")
            for p in tools:  # phase 2 runs without them
                stop_proc(p)

        if args.only in ("all", "latency"):
            fast = start_agentd(tmp, node="fast", simulate_gpus=2, interval=args.latency_interval)
            agents.append(fast)
            load0 = os.getloadavg()[0]
            lat2 = LatencyProbe(fast.ctl, wanted=args.latency_samples)
            lat2.done.wait(args.latency_samples * args.latency_interval * 3 + 15)
            lat2.stop()
            notes.append(f"latency phase: load average {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    finally:
        if probe1 is not None:
            probe1.stop()
        if lat2 is not None:
            lat2.stop()
        if agents and job_ids:
            cancel_all(agents[0], job_ids)
        for a in agents:
            a.stop()
        for p in tools + idle:
            stop_proc(p)
        shutil.rmtree(tmp, ignore_errors=True)
    return report(args, subjects, probe1, lat2, notes)


def glances_version(path: str) -> str:
    try:
        out = subprocess.run([path, "-V"], capture_output=True, text=True, timeout=30).stdout
        return " ".join(out.splitlines()[0].replace(":", "").split()[1:]) if out else "glances"
    except (OSError, subprocess.SubprocessError):
        return "glances"


def report(args: argparse.Namespace, subjects: list[Subject], probe1: LatencyProbe | None,
           lat2: LatencyProbe | None, notes: list[str]) -> str:
    glances = next((s for s in subjects if s.name.startswith("glances") and s.note == ""), None)
    agent = subjects[0] if subjects else Subject("agentd (not measured)", 0)
    lines = [] if not subjects else [
        f"Host: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}, Python {platform.python_version()}; "
        f"{args.duration:g} s window after {args.warmup:g} s warm-up; all three run concurrently; "
        f"{args.idle} idle processes.",
        "",
        "| process | CPU, % of one core | RSS MiB | peak RSS MiB | CPU vs glances |",
        "|---|---:|---:|---:|---:|",
    ]
    if not subjects:
        lines = [f"Host: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}, "
                 f"Python {platform.python_version()}; {args.idle} idle processes."]
    for s in subjects:
        ratio = f"{s.cpu_pct / glances.cpu_pct:.2f}x" if glances and glances.cpu_pct > 0 else "n/a"
        lines.append(f"| {s.name}{' (' + s.note + ')' if s.note else ''} | {s.cpu_pct:.2f} | {s.rss_mib:.1f} | {s.hwm_mib:.1f} | {ratio} |")
    lines += ["", "| stream latency (sample stamped -> decoded by a NodeLink) | samples | p50 ms | p99 ms | max ms |",
              "|---|---:|---:|---:|---:|"]
    for label, probe in ((f"agentd --interval {args.latency_interval:g}", lat2), ("agentd --interval 1 (phase 1, all tools running)", probe1)):
        if probe is None:
            continue
        err = f" ({probe.error})" if probe.error else ""
        scan = [v for v, t in zip(probe.latencies_ms, probe.scan_tick) if t]
        rest = [v for v, t in zip(probe.latencies_ms, probe.scan_tick) if not t]
        for what, v in (("all samples", probe.latencies_ms), ("with a process scan", scan), ("without", rest)):
            lines.append(f"| {label}{err}: {what} | {len(v)} | {percentile(v, 50):.2f} | {percentile(v, 99):.2f} | "
                         f"{max(v, default=float('nan')):.2f} |")
    checks: list[tuple[str, bool | None, str]] = []
    if subjects:
        checks += [
            (f"agentd CPU <= {BUDGET_CPU_PCT:g} % of a core", agent.cpu_pct <= BUDGET_CPU_PCT, f"{agent.cpu_pct:.2f} %"),
            (f"agentd RSS <= {BUDGET_RSS_MIB:g} MiB (peak)", agent.hwm_mib <= BUDGET_RSS_MIB, f"{agent.hwm_mib:.1f} MiB"),
            (f"agentd RSS <= {BUDGET_RSS_MIB:g} MiB once its history is full (estimate)",
             agent.hwm_mib + agent.history_mib <= BUDGET_RSS_MIB,
             f"{agent.hwm_mib + agent.history_mib:.1f} MiB (peak + {agent.history_mib:.1f})"),
            (f"agentd CPU <= {BUDGET_VS_GLANCES:g} x glances",
             None if glances is None else agent.cpu_pct <= BUDGET_VS_GLANCES * glances.cpu_pct,
             "glances not measured" if glances is None else f"{agent.cpu_pct / glances.cpu_pct:.2f}x"),
        ]
    if lat2 is not None:
        v = lat2.latencies_ms
        p99 = percentile(v, 99)
        checks.append((f"stream p99 <= {BUDGET_P99_MS:g} ms (>= {args.latency_samples} samples)",
                       len(v) >= args.latency_samples and p99 <= BUDGET_P99_MS, f"{p99:.2f} ms over {len(v)} samples"))
    lines += ["", "| budget | result | measured |", "|---|---|---|"]
    for what, ok, got in checks:
        lines.append(f"| {what} | {'n/a' if ok is None else ('PASS' if ok else 'MISS')} | {got} |")
    lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def append_docs(path: Path, command: str, table: str) -> None:
    """Write this run into ``path`` under DOCS_HEADING, replacing only a previous run's table;
    notes written by hand after DOCS_MARKER (up to the next ``## `` heading) are kept."""
    generated = (f"{DOCS_HEADING}\n\nMeasured with:\n\n    {command}\n\n"
                 f"Run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n\n{table}\n{DOCS_MARKER}\n")
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    start = text.find(DOCS_HEADING)
    if start < 0:
        path.write_text(text.rstrip("\n") + "\n\n" + generated)
        return
    nxt = text.find("\n## ", start + len(DOCS_HEADING))
    end = len(text) if nxt < 0 else nxt + 1
    mark = text.find(DOCS_MARKER, start, end)
    kept = text[mark + len(DOCS_MARKER):end].lstrip("\n") if mark >= 0 else ""
    section = generated + ("\n" + kept if kept else "")
    if nxt >= 0 and not section.endswith("\n\n"):
        section = section.rstrip("\n") + "\n\n"
    path.write_text(text[:start] + section + text[end:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=60.0, help="measured window, seconds (default 60)")
    p.add_argument("--warmup", type=float, default=8.0, help="seconds before the window starts (default 8)")
    p.add_argument("--idle", type=int, default=300, help="idle sleep children (default 300)")
    p.add_argument("--busy", type=int, default=8, help="busy jobs submitted through agentd (default 8)")
    p.add_argument("--busy-cpus", type=float, default=0.05, help="CPU cap of each busy job, cores (default 0.05)")
    p.add_argument("--glances", help="glances executable (default: on PATH, else /tmp/glances-venv)")
    p.add_argument("--no-glances", action="store_true", help="do not run glances")
    p.add_argument("--latency-interval", type=float, default=0.2, help="agentd interval for the latency phase (default 0.2)")
    p.add_argument("--latency-samples", type=int, default=300, help="samples for the latency phase (default 300: 60 s at 0.2 s)")
    p.add_argument("--only", choices=["all", "overhead", "latency"], default="all", help="run one phase only")
    p.add_argument("--append-docs", type=Path, metavar="FILE", help="also write the result into FILE under its own heading")
    args = p.parse_args(argv)
    table = run(args)
    print(table)
    if args.append_docs:
        command = ".venv/bin/python bench/agentd_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:])
        append_docs(args.append_docs, command.strip(), table)
        print(f"written to {args.append_docs}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
