"""agentctl nodes, watch and top: what the nodes are and what they measure, live."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import msgspec

from agentd.cli.common import (
    CliError,
    Verbs,
    cell,
    clean,
    each_node,
    emit_json,
    human_rate,
    int_in,
    targets,
)
from agentd.cli.watchfmt import (
    derived_to_json,
    event_to_json,
    job_to_json,
    link_to_json,
    summary_to_json,
)
from agentd.metrics import DerivedNode, NodeInventory, NodeSample, derive
from agentd.metrics.units import human_bytes
from agentd.protocol.alerts import Alert
from agentd.protocol.jobs import JobInfo
from agentd.protocol.messages import (
    Alerts,
    AlertsReply,
    EventMsg,
    HelloReply,
    JobMsg,
    SampleMsg,
    Snapshot,
    SnapshotReply,
)
from agentd.protocol.relay import NodeSummary, SummaryMsg
from agentd.transport.client import (
    ClientError,
    LinkMessage,
    LinkSet,
    LinkSnapshot,
    LinkState,
)


def register(verbs: Verbs) -> None:
    """Add the verbs that watch nodes: nodes, whoami, watch, top."""
    p = verbs.add("nodes", help="one row per node: link, CPU, memory, GPUs, jobs")
    p.set_defaults(func=cmd_nodes)
    p = verbs.add("whoami",
                  help="who each node says you are: your Unix user, your role there, and how it knows")
    p.set_defaults(func=cmd_whoami)
    p = verbs.add("alerts", help="the health alerts firing now on every node, most severe first (docs/health.md)")
    p.set_defaults(func=cmd_alerts)
    p = verbs.add("watch", help="live derived samples (--json: one object per node per tick); at a relay, every "
                  "node behind it from its summaries")
    p.add_argument("--count", type=int_in(1, None, "--count"), metavar="N", help="stop after N samples from each node")
    p.set_defaults(func=cmd_watch)
    p = verbs.add("top", help="live terminal view of nodes, GPUs, jobs and busiest processes",
                       description="On a terminal: interactive (arrows select a job, / filter, s sort, p pause/resume, "
                                   "+/- priority, c cancel, ? help, q quit). Not on a terminal, or with --count: "
                                   "plain refreshes for scripts (one, once every node answered, without --count).")
    p.add_argument("--count", type=int_in(1, None, "--count"), metavar="N",
                   help="refresh N times without keys, then exit (for scripts and tests)")
    p.set_defaults(func=cmd_top)


def _node_row(endpoint: str, hello: HelloReply | None, snap: SnapshotReply | None, error: str = "") -> dict[str, Any]:
    if hello is None or snap is None:
        return {"name": "", "endpoint": endpoint, "link": "down", "error": error}
    inv = snap.inventory
    derived = derive(snap.samples[-1], snap.samples[-2] if len(snap.samples) > 1 else None) if snap.samples else None
    active = [j for j in snap.jobs if j.state in ("queued", "running", "paused", "checkpointing", "migrating")]
    return {
        "name": inv.node, "endpoint": endpoint, "link": "live", "hostname": inv.hostname,
        "cpu_model": inv.cpu_model, "cpu_count": inv.cpu_count, "memory_total_bytes": inv.mem_total_bytes,
        "cpu_pct": derived.cpu_pct if derived else None,
        "memory_used_bytes": derived.mem_used_bytes if derived else None,
        "gpu_backend": inv.gpu_backend, "gpu_status": inv.gpu_status,
        "gpus": [{"index": g.index, "name": g.name, "uuid": g.uuid, "pci_bus_id": g.pci_bus_id,
                  "mem_total_bytes": g.mem_total_bytes, "simulated": g.simulated} for g in inv.gpus],
        "jobs": len(active), "agentd_version": hello.agentd_version, "capabilities": hello.capabilities,
        "labels": inv.labels,
    }


def cmd_whoami(args: argparse.Namespace) -> int:
    rows, failed = [], 0
    for t, c in each_node(args):
        try:
            h = c.hello()
        except ClientError as exc:
            print(f"agentctl: {exc}", file=sys.stderr)
            failed += 1
            continue
        rows.append({"node": h.node, "endpoint": t.endpoint, "user": h.user, "role": h.role,
                     "verified_by": h.verified_by, "local_endpoint": h.local_endpoint})
    if args.json:
        emit_json(rows)
    for r in rows if not args.json else []:
        who = r["user"] or "nobody the node can name"
        how = f"verified by {r['verified_by']}" if r["verified_by"] else (
            "not verified: you may only watch" + (f"; connect with --node {r['local_endpoint']}" if r["local_endpoint"] else ""))
        print(f"{r['node']}: {who}, role {r['role']} ({how})")
    return 2 if failed else 0


def _relayed_rows(c: Any, hello: HelloReply) -> list[dict[str, Any]]:
    """One row per node a relay serves (itself included), from its summaries."""
    from agentd.protocol.relay import Nodes, NodesReply

    reply = c.call(Nodes())
    assert isinstance(reply, NodesReply)
    return [{"name": n.node, "endpoint": n.endpoint or hello.node, "link": n.link, "error": n.detail, "via": [hello.node, *n.via],
             "simulated": n.simulated, "cpu_count": n.cpu_count, "cpu_pct": n.cpu_pct, "memory_used_bytes": n.mem_used_bytes,
             "memory_total_bytes": n.mem_total_bytes, "gpus": [{"index": g.index} for g in n.gpus],
             "gpu_status": "simulated" if n.simulated else "", "jobs": len(n.jobs), "labels": n.labels}
            for n in reply.nodes]


def cmd_nodes(args: argparse.Namespace) -> int:
    rows = []
    for t, c in each_node(args):
        try:
            hello = c.hello()
            if "relay" in hello.capabilities:  # every node behind it, from its 1 Hz summaries
                rows += _relayed_rows(c, hello)
                continue
            snap = c.call(Snapshot(history=2))
            assert isinstance(snap, SnapshotReply)
            rows.append(_node_row(t.endpoint, hello, snap))
        except ClientError as exc:
            rows.append(_node_row(t.endpoint, None, None, str(exc)))
    if args.json:
        emit_json(rows)
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(box=None, header_style="bold")
        for col in ("NODE", "ENDPOINT", "LINK", "CPU", "MEMORY", "GPUS", "JOBS"):
            table.add_column(col)
        for r in rows:
            if r["link"] != "live":
                table.add_row(cell(r["name"] or "?"), cell(r["endpoint"]), f"[red]{cell(r['link'])}[/red]", "", "", cell(r["error"]), "")
                continue
            gpus = f"{len(r['gpus'])} ({r['gpu_status']})" if r["gpus"] else r["gpu_status"] or "none"
            cpu = "—" if r["cpu_pct"] is None else f"{r['cpu_pct']:.0f}% of {r['cpu_count']}"
            mem = f"{human_bytes(r['memory_used_bytes'])} / {human_bytes(r['memory_total_bytes'])}"
            gpus += " SIMULATED" if r.get("simulated") and "simulated" not in gpus else ""
            table.add_row(cell(r["name"]), cell(r["endpoint"]), "[green]live[/green]", cpu, mem, cell(gpus), str(r["jobs"]))
        Console().print(table)
    down = [r for r in rows if r["link"] == "down"]
    if down:
        for r in down:
            print(f"agentctl: {clean(r['error'])}", file=sys.stderr)
        return 2
    return 0


_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
_SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "blue"}


def cmd_alerts(args: argparse.Namespace) -> int:
    alerts: list[Alert] = []
    down: list[str] = []
    for _target, c in each_node(args):
        try:
            reply = c.call(Alerts())
            assert isinstance(reply, AlertsReply)
            alerts += reply.alerts
        except ClientError as exc:
            down.append(str(exc))
    alerts.sort(key=lambda a: (_SEVERITY_ORDER.get(a.severity, 3), a.since_s, a.key))
    now = time.time()
    if args.json:
        emit_json([{**msgspec.to_builtins(a), "for_s": round(max(0.0, now - a.since_s), 1)} for a in alerts])
    elif not alerts:
        print("no alerts firing" + (" on the nodes that answered" if down else ""))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(box=None, header_style="bold")
        for col in ("SEVERITY", "NODE", "SUBJECT", "FOR", "ALERT"):
            table.add_column(col)
        for a in alerts:
            style = _SEVERITY_STYLE.get(a.severity, "")
            table.add_row(f"[{style}]{a.severity}[/{style}]", cell(a.node), cell(a.subject),
                          _age(now - a.since_s), cell(a.message))
        Console().print(table)
    for error in down:
        print(f"agentctl: {clean(error)}", file=sys.stderr)
    return 2 if down else 0


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _links(args: argparse.Namespace) -> LinkSet:
    links = LinkSet()
    for t in targets(args):
        try:
            links.add(t.endpoint, server_key=t.server_key or None, hello_timeout_s=args.timeout)
        except ValueError as exc:
            links.close()
            raise CliError(str(exc), 2) from None
    return links


def human_watch_line(d: DerivedNode) -> str:
    gpus = " ".join(f"gpu{g.index}:{g.sm_util_pct or 0:.0f}%" for g in d.gpus)
    return (f"{time.strftime('%H:%M:%S', time.localtime(d.wall_s))} {d.node:<12} cpu {d.cpu_pct:5.1f}%  "
            f"mem {d.mem_used_pct:5.1f}%  net ↓{human_rate(d.net_rx_bytes_per_s)} ↑{human_rate(d.net_tx_bytes_per_s)}  "
            f"disk r {human_rate(d.disk_read_bytes_per_s)} w {human_rate(d.disk_write_bytes_per_s)}  {gpus}")


def _human_event_line(ts: float, node: str, text: str) -> str:
    return f"{time.strftime('%H:%M:%S', time.localtime(ts))} {node:<12} {text}"


def human_summary_line(n: NodeSummary) -> str:
    """A node behind a relay, from its summary (what crosses a relay every second)."""
    when = time.strftime('%H:%M:%S', time.localtime(n.wall_s or time.time()))
    if n.cpu_pct is None:
        return f"{when} {n.node:<12} {n.link}{': ' + n.detail if n.detail else ''}"
    mem = 100.0 * (n.mem_used_bytes or 0) / n.mem_total_bytes if n.mem_total_bytes else 0.0
    gpus = " ".join(f"gpu{g.index}:{g.util_pct or 0:.0f}%" for g in n.gpus)
    extra = f"  jobs {len(n.jobs)}" + (f"  alerts {len(n.alerts)}" if n.alerts else "")
    link = "" if n.link == "live" else f"  [{n.link}]"
    return f"{when} {n.node:<12} cpu {n.cpu_pct:5.1f}%  mem {mem:5.1f}%{extra}  {gpus}{link}"


def cmd_watch(args: argparse.Namespace) -> int:
    links = _links(args)
    last: dict[str, NodeSample] = {}
    printed: dict[str, int] = {}
    ever_live: set[str] = set()
    relays: set[str] = set()  # relays answering: --count also waits for the nodes behind them
    summarised: set[str] = set()
    start = time.monotonic()
    try:
        while True:
            for ev in links.poll(0.5):
                if isinstance(ev, LinkSnapshot):
                    ever_live.add(ev.endpoint)
                    if "relay" in ev.hello.capabilities:
                        relays.add(ev.hello.node)
                    if ev.reply.samples:
                        last[ev.node] = ev.reply.samples[-1]
                elif isinstance(ev, LinkState):
                    if args.json:
                        emit_json(link_to_json(ev.node or ev.endpoint, time.time(), ev.state, ev.detail))
                    if ev.state == "down":
                        print(clean(f"agentctl: {ev.endpoint}: link down ({ev.detail})"), file=sys.stderr)
                elif isinstance(ev, LinkMessage) and isinstance(ev.msg, SampleMsg):
                    s = ev.msg.sample
                    d = derive(s, last.get(s.node))
                    last[s.node] = s
                    if args.json:
                        emit_json(derived_to_json(d))
                    else:
                        print(clean(human_watch_line(d)), flush=True)
                    printed[s.node] = printed.get(s.node, 0) + 1
                elif isinstance(ev, LinkMessage) and isinstance(ev.msg, SummaryMsg):
                    summarised.add(ev.msg.node)
                    for n in ev.msg.nodes:  # every node behind a relay, once per relay tick
                        if n.node == ev.msg.node:
                            continue  # the relay's own node: its samples are printed above
                        if args.json:
                            emit_json(summary_to_json(n, ev.msg.node))
                        else:
                            print(clean(human_summary_line(n)), flush=True)
                        printed[n.node] = printed.get(n.node, 0) + 1
                elif isinstance(ev, LinkMessage) and isinstance(ev.msg, JobMsg):
                    j = ev.msg.job
                    if args.json:
                        emit_json(job_to_json(j, time.time()))
                    else:
                        print(clean(_human_event_line(time.time(), j.node, f"job {j.id} {j.name}: {j.state}")), flush=True)
                elif isinstance(ev, LinkMessage) and isinstance(ev.msg, EventMsg):
                    e = ev.msg.event
                    if args.json:
                        emit_json(event_to_json(e))
                    else:
                        print(clean(_human_event_line(e.wall_s, e.node, f"{e.kind}: {e.message}")), flush=True)
            if args.count and printed and len(printed) >= len(ever_live) and min(printed.values()) >= args.count \
                    and relays <= summarised:
                return 0
            if not ever_live and time.monotonic() - start > args.timeout:
                eps = ", ".join(links.links)
                raise CliError(f"no agentd answered at {eps} within {args.timeout:g} s", 2)
    finally:
        links.close()


def render_top(inventories: dict[str, NodeInventory], derived: dict[str, DerivedNode], states: dict[str, str], jobs: dict[str, list[JobInfo]]) -> Any:
    from rich.console import Group
    from rich.table import Table

    nodes = Table(title="Nodes", box=None, header_style="bold", expand=True)
    for col in ("NODE", "LINK", "CPU%", "MEM", "NET ↓/↑", "DISK R/W", "GPUS"):
        nodes.add_column(col)
    gpus = Table(title="GPUs", box=None, header_style="bold", expand=True)
    for col in ("NODE", "GPU", "NAME", "UTIL", "MEM", "POWER", "TEMP", "PROCS"):
        gpus.add_column(col)
    procs = Table(title="Busiest processes", box=None, header_style="bold", expand=True)
    for col in ("NODE", "PID", "USER", "CPU%", "RSS", "GPU MEM", "NAME"):
        procs.add_column(col)
    job_table = Table(title="Jobs", box=None, header_style="bold", expand=True)
    for col in ("ID", "NAME", "STATE", "PRIO", "GPUS", "CPU%", "MEM", "THROUGHPUT"):
        job_table.add_column(col)
    for endpoint, state in sorted(states.items()):
        inv = inventories.get(endpoint)
        d = derived.get(endpoint)
        colour = {"live": "green", "stale": "yellow"}.get(state, "red")
        if inv is None or d is None:
            nodes.add_row(cell(inv.node if inv else endpoint), f"[{colour}]{state}[/{colour}]", "", "", "", "", "")
            continue
        gpu_note = inv.gpu_status if not inv.gpus else f"{len(inv.gpus)}{' (simulated)' if inv.gpu_backend == 'simulated' else ''}"
        nodes.add_row(cell(inv.node), f"[{colour}]{state}[/{colour}]", f"{d.cpu_pct:.0f}", f"{d.mem_used_pct:.0f}%",
                      f"{human_rate(d.net_rx_bytes_per_s)} / {human_rate(d.net_tx_bytes_per_s)}",
                      f"{human_rate(d.disk_read_bytes_per_s)} / {human_rate(d.disk_write_bytes_per_s)}", cell(gpu_note))
        names = {g.index: g.name for g in inv.gpus}
        for g in d.gpus:
            gpus.add_row(cell(inv.node), str(g.index), cell(names.get(g.index, "")), f"{g.sm_util_pct or 0:.0f}%",
                         f"{human_bytes(g.mem_used_bytes)} / {human_bytes(g.mem_total_bytes)}",
                         "—" if g.power_w is None else f"{g.power_w:.0f} W", "—" if g.temp_c is None else f"{g.temp_c:.0f}°C",
                         str(len(g.processes)))
        for p in sorted(d.procs, key=lambda p: -p.cpu_pct)[:8]:
            procs.add_row(cell(inv.node), str(p.pid), cell(p.user), f"{p.cpu_pct:.1f}", human_bytes(p.rss_bytes),
                          human_bytes(p.gpu_mem_bytes) if p.gpu_mem_bytes else "", cell(p.name))
        by_job = {j.job_id: j for j in d.jobs}
        for j in jobs.get(endpoint, []):
            if j.state in ("succeeded", "failed", "cancelled", "migrated"):
                continue
            dj = by_job.get(j.id)
            thr = ", ".join(f"{k.removesuffix('_per_s')} {v:.1f}/s" for k, v in (dj.app if dj else {}).items() if k.endswith("_per_s"))
            job_table.add_row(cell(j.id), cell(j.name), cell(j.state), f"{j.priority:+d}", ",".join(map(str, j.gpus)) or "—",
                              f"{dj.cpu_pct:.0f}" if dj else "", human_bytes(dj.mem_current_bytes) if dj else "", cell(thr))
    return Group(nodes, gpus, job_table, procs)


def cmd_top(args: argparse.Namespace) -> int:
    """Interactive on a terminal (see agentd.cli.toptui); ``--count N`` refreshes N times and
    exits; with stdout not a terminal and no ``--count``, one view once every node answered."""
    from rich.console import Console

    console = Console()
    interactive = sys.stdout.isatty() and not args.count
    links = _links(args)
    try:
        if interactive:
            from agentd.cli.toptui import run_interactive

            return run_interactive(args, links)
        from agentd.cli.toptui import TopState

        st = TopState(states=dict.fromkeys(links.links, "connecting"))
        refreshes = 0
        start = time.monotonic()
        # plain prints: a pipe or a file gets every refresh, each ending in a newline
        while True:
            for ev in links.poll(1.0 if args.count else 0.3):
                st.feed(ev)
            for ep, link in links.links.items():
                st.states[ep] = link.state
            if not args.count:
                settled = all(ep in st.derived or st.states.get(ep) == "down" for ep in links.links)
                if not settled and time.monotonic() - start < args.timeout:
                    continue
                if not st.derived:
                    eps = ", ".join(links.links)
                    raise CliError(f"no agentd answered at {eps} within {args.timeout:g} s", 2)
            console.print(render_top(st.inventories, st.derived, st.states,
                                     {k: list(v.values()) for k, v in st.jobs.items()}))
            refreshes += 1
            if refreshes >= (args.count or 1):
                return 0
    finally:
        links.close()
