"""``agentctl top`` on a terminal: an interactive view in the manner of nvitop and k9s.

Keys: Up/Down (or k/j) select a job, PgUp/PgDn/Home/End jump; ``/`` filter (Enter keeps it, Esc
clears it); ``s`` next sort column, ``r`` reverse; ``p`` pause or resume the selected job; ``+``
and ``-`` raise and lower its priority; ``c`` cancel it (asks y/n); ``?`` help; ``q`` quit.

One thread owns the stream links (this one); each action runs in a short worker thread with
its own request socket, so a slow cancel never freezes the screen. Everything shown that comes
from other people (job names, messages) goes through :func:`agentd.cli.common.cell`.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import select
import sys
import termios
import threading
import time
import tty
from dataclasses import dataclass, field
from typing import Any

from agentd.cli.common import CliError, cell, clean, human_rate, targets
from agentd.metrics import DerivedNode, NodeInventory, NodeSample, derive
from agentd.metrics.units import human_bytes
from agentd.protocol import JobInfo
from agentd.protocol.limits import PRIORITY_MAX, PRIORITY_MIN
from agentd.protocol.messages import (
    Cancel,
    JobMsg,
    JobReply,
    Pause,
    Priority,
    Request,
    Resume,
    SampleMsg,
)
from agentd.transport.client import (
    ClientError,
    LinkMessage,
    LinkSet,
    LinkSnapshot,
    LinkState,
    NodeClient,
)

REFRESH_S = 0.5  # redraw at least this often; keys redraw at once
ACTION_TIMEOUT_S = 20.0  # a cancel may wait for the job's end (10 s at most, daemon side)
CANCEL_GRACE_S = 10.0
ENDED = ("succeeded", "failed", "cancelled", "migrated")
SORTS = ("id", "name", "state", "priority", "cpu", "memory")
HELP = [
    ("Up/Down, k/j", "select a job"),
    ("PgUp/PgDn, Home/End", "jump"),
    ("/", "filter jobs by id, name, state or node (Enter keeps it, Esc clears it)"),
    ("s / r", "sort by the next column / reverse the order"),
    ("p", "pause the selected job, or resume it when paused"),
    ("+ / -", "raise / lower its priority by one"),
    ("c", "cancel it (asks y/n first)"),
    ("?", "this help (any key closes it)"),
    ("q, Ctrl-C", "quit"),
]
_KEYS = {"\x1b[A": "up", "\x1bOA": "up", "\x1b[B": "down", "\x1bOB": "down", "\x1b[5~": "pgup", "\x1b[6~": "pgdn",
         "\x1b[H": "home", "\x1b[F": "end", "\x1b[1~": "home", "\x1b[4~": "end", "\x1bOH": "home", "\x1bOF": "end",
         "\x1b[C": "right", "\x1b[D": "left", "\x1bOC": "right", "\x1bOD": "left"}
_ID_NUMBER = re.compile(r"^(.*)\.(\d+)$")


def split_keys(data: str) -> list[str]:
    """Key names from what a terminal in cbreak mode sent: escape sequences become ``up``,
    ``down``... a lone ESC is ``esc``, Enter is ``enter``, Backspace is ``backspace``."""
    out: list[str] = []
    i = 0
    while i < len(data):
        ch = data[i]
        if ch == "\x1b":
            for seq, name in _KEYS.items():
                if data.startswith(seq, i):
                    out.append(name)
                    i += len(seq)
                    break
            else:
                m = re.match(r"\x1b\[[0-9;]*[A-Za-z~]", data[i:])
                if m:  # a sequence we do not use
                    i += m.end()
                else:
                    out.append("esc")
                    i += 1
            continue
        out.append({"\r": "enter", "\n": "enter", "\x7f": "backspace", "\x08": "backspace", "\x03": "ctrl-c"}.get(ch, ch))
        i += 1
    return out


def _id_key(job_id: str) -> tuple[str, int, str]:
    m = _ID_NUMBER.match(job_id)
    return (m.group(1), int(m.group(2)), "") if m else (job_id, 0, job_id)


@dataclass
class TopState:
    """What the screen shows, fed from the links; pure, so the key handling can be tested."""

    inventories: dict[str, NodeInventory] = field(default_factory=dict)
    last: dict[str, NodeSample] = field(default_factory=dict)
    derived: dict[str, DerivedNode] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    jobs: dict[str, dict[str, JobInfo]] = field(default_factory=dict)  # endpoint -> id -> job
    selected: str = ""  # job id
    filter: str = ""
    editing_filter: bool = False
    sort: str = "id"
    reverse: bool = False
    confirm: str = ""  # job id waiting for y/n to cancel
    help: bool = False
    message: str = ""

    def feed(self, ev: Any) -> None:
        if isinstance(ev, LinkSnapshot):
            self.inventories[ev.endpoint] = ev.reply.inventory
            self.jobs[ev.endpoint] = {j.id: j for j in ev.reply.jobs}
            s = ev.reply.samples
            if s:
                self.last[ev.endpoint] = s[-1]
                self.derived[ev.endpoint] = derive(s[-1], s[-2] if len(s) > 1 else None)
        elif isinstance(ev, LinkState):
            self.states[ev.endpoint] = ev.state
        elif isinstance(ev, LinkMessage):
            if isinstance(ev.msg, SampleMsg):
                self.derived[ev.endpoint] = derive(ev.msg.sample, self.last.get(ev.endpoint))
                self.last[ev.endpoint] = ev.msg.sample
            elif isinstance(ev.msg, JobMsg):
                self.jobs.setdefault(ev.endpoint, {})[ev.msg.job.id] = ev.msg.job

    def job_rows(self) -> list[tuple[str, JobInfo]]:
        """(endpoint, job) of the active jobs that pass the filter, in the chosen order."""
        by_job: dict[str, Any] = {}
        for d in self.derived.values():
            by_job.update({j.job_id: j for j in d.jobs})
        rows = [(ep, j) for ep, js in self.jobs.items() for j in js.values() if j.state not in ENDED]
        if self.filter:
            f = self.filter.lower()
            rows = [(ep, j) for ep, j in rows if any(f in str(x).lower() for x in (j.id, j.name, j.state, j.node))]

        def key(row: tuple[str, JobInfo]) -> Any:
            j = row[1]
            dj = by_job.get(j.id)
            return {
                "id": _id_key(j.id),
                "name": (j.name.lower(), _id_key(j.id)),
                "state": (j.state, _id_key(j.id)),
                "priority": (-j.priority, _id_key(j.id)),
                "cpu": (-(dj.cpu_pct if dj else 0.0), _id_key(j.id)),
                "memory": (-(dj.mem_current_bytes if dj and dj.mem_current_bytes else 0), _id_key(j.id)),
            }[self.sort]

        return sorted(rows, key=key, reverse=self.reverse)

    def selected_row(self) -> tuple[str, JobInfo] | None:
        rows = self.job_rows()
        for row in rows:
            if row[1].id == self.selected:
                return row
        if rows:
            self.selected = rows[0][1].id
            return rows[0]
        self.selected = ""
        return None

    def move(self, step: int) -> None:
        rows = self.job_rows()
        if not rows:
            return
        ids = [j.id for _, j in rows]
        i = ids.index(self.selected) if self.selected in ids else 0
        self.selected = ids[max(0, min(len(ids) - 1, i + step))]


class TopApp:
    """The interactive loop: keys from the terminal, events from the links, actions in threads."""

    def __init__(self, args: argparse.Namespace, links: LinkSet) -> None:
        self.args = args
        self.links = links
        self.state = TopState(states=dict.fromkeys(links.links, "connecting"))
        self.keys_of: dict[str, str] = {t.endpoint: t.server_key for t in targets(args)}
        self.results: queue.Queue[str] = queue.Queue()
        self.busy = 0
        self.quit = False

    # ---- actions ----

    def _act(self, endpoint: str, req: Request, done: str) -> None:
        def run() -> None:
            try:
                with NodeClient(endpoint, server_key=self.keys_of.get(endpoint) or None,
                                timeout_s=max(self.args.timeout, ACTION_TIMEOUT_S)) as c:
                    reply = c.call(req)
                msg = done
                if isinstance(reply, JobReply) and reply.message:
                    msg += f" ({reply.message})"
            except ClientError as exc:
                msg = f"refused: {exc}"
            self.results.put(msg)

        self.busy += 1
        threading.Thread(target=run, name="agentctl-top-action", daemon=True).start()

    def handle(self, key: str) -> None:
        st = self.state
        if key == "ctrl-c":
            self.quit = True
            return
        if st.help:
            st.help = False
            return
        if st.confirm:
            job_id, st.confirm = st.confirm, ""
            row = next(((ep, j) for ep, j in st.job_rows() if j.id == job_id), None)
            if key in ("y", "Y") and row is not None:
                st.message = f"cancelling {job_id}…"
                self._act(row[0], Cancel(job=job_id, grace_s=CANCEL_GRACE_S), f"cancelled {job_id}")
            else:
                st.message = f"{job_id} not cancelled"
            return
        if st.editing_filter:
            if key == "enter":
                st.editing_filter = False
            elif key == "esc":
                st.editing_filter, st.filter = False, ""
            elif key == "backspace":
                st.filter = st.filter[:-1]
            elif len(key) == 1 and key.isprintable():
                st.filter += key
            return
        row = st.selected_row()
        if key == "q":
            self.quit = True
        elif key == "?":
            st.help = True
        elif key in ("up", "k"):
            st.move(-1)
        elif key in ("down", "j"):
            st.move(1)
        elif key == "pgup":
            st.move(-10)
        elif key == "pgdn":
            st.move(10)
        elif key == "home":
            st.move(-10**9)
        elif key == "end":
            st.move(10**9)
        elif key == "/":
            st.editing_filter = True
        elif key == "esc":
            st.filter = ""
        elif key == "s":
            st.sort = SORTS[(SORTS.index(st.sort) + 1) % len(SORTS)]
            st.message = f"sorted by {st.sort}"
        elif key == "r":
            st.reverse = not st.reverse
        elif key in ("p", "+", "-", "c"):
            if row is None:
                st.message = "no job selected" + (f" (filter {st.filter!r} matches none)" if st.filter else "")
                return
            ep, j = row
            if key == "p":
                if j.state == "paused":
                    st.message = f"resuming {j.id}…"
                    self._act(ep, Resume(job=j.id), f"resumed {j.id}")
                else:
                    st.message = f"pausing {j.id}…"
                    self._act(ep, Pause(job=j.id), f"paused {j.id}")
            elif key in ("+", "-"):
                new = j.priority + (1 if key == "+" else -1)
                if not PRIORITY_MIN <= new <= PRIORITY_MAX:
                    st.message = f"{j.id} is already at priority {j.priority:+d} ({PRIORITY_MIN}..{PRIORITY_MAX})"
                    return
                st.message = f"priority of {j.id} → {new:+d}…"
                self._act(ep, Priority(job=j.id, priority=new), f"priority of {j.id} is {new:+d}")
            else:
                st.confirm = j.id

    # ---- drawing ----

    def render(self, height: int) -> Any:
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        st = self.state
        live = sum(1 for s in st.states.values() if s == "live")
        head = Text.assemble(("agentctl top", "bold"), f"  {live}/{len(st.states)} nodes live  ",
                             f"sort: {st.sort}{' ↑' if st.reverse else ''}  ",
                             (f"filter: {clean(st.filter)}{'▏' if st.editing_filter else ''}  " if st.filter or st.editing_filter else ""),
                             ("? help  q quit", "dim"))
        if st.help:
            t = Table(box=None, show_header=False)
            t.add_column(style="bold")
            t.add_column()
            for k, what in HELP:
                t.add_row(k, what)
            return Group(head, Panel(t, title="Keys", expand=False))
        nodes = Table(title="Nodes", box=None, header_style="bold", expand=True)
        for col in ("NODE", "LINK", "CPU%", "MEM", "NET ↓/↑", "GPUS"):
            nodes.add_column(col)
        gpus = Table(title="GPUs", box=None, header_style="bold", expand=True)
        for col in ("NODE", "GPU", "UTIL", "MEM", "POWER", "TEMP"):
            gpus.add_column(col)
        by_job: dict[str, Any] = {}
        for ep, state in sorted(st.states.items()):
            inv, d = st.inventories.get(ep), st.derived.get(ep)
            colour = {"live": "green", "stale": "yellow"}.get(state, "red")
            name = cell(inv.node if inv else ep)
            if inv is None or d is None:
                nodes.add_row(name, f"[{colour}]{state}[/{colour}]", "", "", "", "")
                continue
            by_job.update({j.job_id: j for j in d.jobs})
            nodes.add_row(name, f"[{colour}]{state}[/{colour}]", f"{d.cpu_pct:.0f}", f"{d.mem_used_pct:.0f}%",
                          f"{human_rate(d.net_rx_bytes_per_s)} / {human_rate(d.net_tx_bytes_per_s)}",
                          cell(f"{len(inv.gpus)}{' (simulated)' if inv.gpu_backend == 'simulated' else ''}" if inv.gpus else inv.gpu_status))
            for g in d.gpus:
                gpus.add_row(name, str(g.index), f"{g.sm_util_pct or 0:.0f}%",
                             f"{human_bytes(g.mem_used_bytes)} / {human_bytes(g.mem_total_bytes)}",
                             "—" if g.power_w is None else f"{g.power_w:.0f} W", "—" if g.temp_c is None else f"{g.temp_c:.0f}°C")
        rows = st.job_rows()
        st.selected_row()
        room = max(3, height - len(st.states) - 12)
        ids = [j.id for _, j in rows]
        at = ids.index(st.selected) if st.selected in ids else 0
        first = max(0, min(at - room // 2, len(rows) - room))
        shown = rows[first:first + room]
        jobs = Table(title=f"Jobs ({len(rows)}{' matching' if st.filter else ''}"
                           f"{f', {first + 1}-{first + len(shown)}' if len(shown) < len(rows) else ''})",
                     box=None, header_style="bold", expand=True)
        for col in ("ID", "NAME", "NODE", "STATE", "PRIO", "GPUS", "CPU%", "MEM", "THROUGHPUT"):
            jobs.add_column(col)
        for _, j in shown:
            dj = by_job.get(j.id)
            thr = ", ".join(f"{k.removesuffix('_per_s')} {v:.1f}/s" for k, v in (dj.app if dj else {}).items() if k.endswith("_per_s"))
            jobs.add_row(cell(j.id), cell(j.name), cell(j.node), cell(j.state), f"{j.priority:+d}",
                         ",".join(map(str, j.gpus)) or "—", f"{dj.cpu_pct:.0f}" if dj else "",
                         human_bytes(dj.mem_current_bytes) if dj else "", cell(thr),
                         style="reverse" if j.id == st.selected else None)
        if st.confirm:
            foot = Text(f"Cancel job {clean(st.confirm)}? It gets SIGTERM, then SIGKILL after {CANCEL_GRACE_S:g} s.  y / n",
                        style="bold yellow")
        elif st.editing_filter:
            foot = Text("filter: type text, Enter keeps it, Esc clears it", style="dim")
        else:
            foot = Text(clean(st.message) or "↑↓ select  / filter  s sort  p pause/resume  +/- priority  c cancel  ? help  q quit",
                        style="dim" if not st.message else "")
        return Group(head, nodes, jobs, gpus, foot)

    # ---- loop ----

    def run(self) -> int:
        from rich.console import Console
        from rich.live import Live

        console = Console()
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            with Live(console=console, auto_refresh=False, screen=True) as live:
                next_draw = 0.0
                while not self.quit:
                    dirty = False
                    ready, _, _ = select.select([fd], [], [], 0.05)
                    if ready:
                        data = os.read(fd, 1024).decode("utf-8", "replace")
                        if not data:  # the terminal went away
                            return 0
                        for key in split_keys(data):
                            self.handle(key)
                        dirty = True
                    for ev in self.links.poll(0.05):
                        self.state.feed(ev)
                    for ep, link in self.links.links.items():
                        self.state.states[ep] = link.state
                    while True:
                        try:
                            self.state.message = self.results.get_nowait()
                            self.busy -= 1
                            dirty = True
                        except queue.Empty:
                            break
                    now = time.monotonic()
                    if dirty or now >= next_draw:
                        live.update(self.render(console.height), refresh=True)
                        next_draw = now + REFRESH_S
        except KeyboardInterrupt:
            pass
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        return 0


def run_interactive(args: argparse.Namespace, links: LinkSet) -> int:
    """``agentctl top`` on a terminal; CliError when stdin is not one either."""
    if not sys.stdin.isatty():
        raise CliError("interactive top needs a terminal on stdin; use --count N for a script", 2)
    return TopApp(args, links).run()

