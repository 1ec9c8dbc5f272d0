"""agentctl record / replay / recording info / recording set.

``record`` follows daemons with NodeLinks and writes what they yield through
agentd.store.link_recorder (the app's recording uses the same call);
``replay`` prints a recording as the very JSON lines ``agentctl watch --json`` prints live.
"""

from __future__ import annotations

import argparse
import datetime as dt
import heapq
import json
import math
import re
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

from agentd.cli.common import CliError, Verbs, clean, targets
from agentd.cli.nodes import human_watch_line
from agentd.cli.watchfmt import (
    derived_to_json,
    event_to_json,
    gap_to_json,
    job_to_json,
    link_to_json,
)
from agentd.metrics.units import human_bytes
from agentd.store.recording import (
    Recorder,
    RecordingError,
    RecordingInfo,
    RecordingReader,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: How often ``record`` prints progress to stderr (a terminal gets a line redrawn in place).
PROGRESS_EVERY_S = 1.0
PROGRESS_EVERY_S_PIPE = 10.0
_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s?)?$")


def register(verbs: Verbs) -> None:
    """Add record, replay and recording {info,set} to agentctl's subparsers."""
    p = verbs.add("record", help="record the cluster's stream to a SQLite file until Ctrl-C",
                              description="Record every node's samples, jobs, events and link states to OUT "
                                          "(SQLite). Progress goes to stderr.")
    p.add_argument("out", metavar="OUT.db", help="recording file to create (or append to)")
    p.add_argument("--duration", type=_duration, metavar="S", help="stop after S seconds (also 90s, 5m, 1h30m)")
    p.add_argument("--title", default="", help="session title (default: 'Recording DATE TIME')")
    p.add_argument("--notes", default="", help="free-form notes stored with the session")
    p.add_argument("--follow", action="append", default=[], metavar="NODE",
                   help="with --node RELAY: record NODE behind it in full (its own stream), not only its 1 Hz "
                        "summary; repeatable (docs/relays.md)")
    p.set_defaults(func=cmd_record)

    p = verbs.add("replay", help="print a recording as 'agentctl watch' lines",
                              description="Print a recording as the same lines 'agentctl watch' prints live: samples, "
                                          "jobs, events, link changes and gaps in time order (--json: one object per "
                                          "line, each with a type).")
    p.add_argument("file", metavar="FILE", help="recording file")
    p.add_argument("--from", dest="t_from", metavar="T", help="start: seconds from the start, 5m, epoch seconds or ISO time")
    p.add_argument("--to", dest="t_to", metavar="T", help="end, same forms as --from")
    p.add_argument("--speed", type=float, metavar="X", help="pace output at X times real time (default: as fast as possible)")
    p.set_defaults(func=cmd_replay)

    p = verbs.add("recording", help="inspect or edit a recording file")
    actions = verbs.group(p, "recording_verb")
    q = actions.add("info", help="title, time span, nodes, sample counts, events, gaps, size")
    q.add_argument("file", metavar="FILE", help="recording file")
    q.set_defaults(func=cmd_info)
    q = actions.add("set", help="edit the title and notes of a recording")
    q.add_argument("file", metavar="FILE", help="recording file")
    q.add_argument("--title", help="new title")
    q.add_argument("--notes", help="new notes")
    q.set_defaults(func=cmd_set)


# ---- argument parsing ----


def _duration(text: str) -> float:
    m = _DURATION_RE.match(text.strip())
    if not text.strip() or not m or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"duration {text!r} is not a number of seconds or like 90s, 5m, 1h30m")
    h, mnt, s = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mnt * 60 + s


def parse_time(text: str | None, start_s: float) -> float | None:
    """A time given by the user: an offset from the recording's start ("90", "5m", "1h30m"),
    epoch seconds (> 1e9), or an ISO 8601 date-time (local time when no zone is given)."""
    if text is None:
        return None
    t = text.strip()
    try:
        value = float(t)
        return value if value > 1e9 else start_s + value
    except ValueError:
        pass
    try:
        return start_s + _duration(t)
    except argparse.ArgumentTypeError:
        pass
    try:
        return dt.datetime.fromisoformat(t).timestamp()
    except ValueError:
        raise CliError(f"time {text!r} is not an offset (90, 5m, 1h30m), epoch seconds or an ISO date-time", EXIT_USAGE) from None


def _open(path: str) -> RecordingReader:
    try:
        return RecordingReader(path)
    except RecordingError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _when(t: float | None) -> str:
    return "—" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


# ---- record ----


class _Stop(Exception):
    pass


def cmd_record(args: argparse.Namespace) -> int:
    from agentd.protocol.link import LinkSnapshot, LinkState
    from agentd.store.link_recorder import LinkRecorder
    from agentd.transport.client import LinkSet

    timeout = getattr(args, "timeout", 5.0) or 5.0
    tgts = targets(args)
    try:
        rec = Recorder(args.out, title=args.title, notes=args.notes)
    except RecordingError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    writer = LinkRecorder(rec)  # the app records through the same call
    detail = _RelayDetail(args, writer, {t.endpoint: t.server_key for t in tgts})
    links = LinkSet()
    key_of: dict[str, str] = {}
    old_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        raise _Stop()

    signal.signal(signal.SIGTERM, on_term)
    tty = sys.stderr.isatty()
    started = time.monotonic()
    next_progress = started + (PROGRESS_EVERY_S if tty else PROGRESS_EVERY_S_PIPE)
    reason = "stopped"
    try:
        for t in tgts:
            key = t.name or t.endpoint
            key_of[t.endpoint] = key
            try:
                links.add(t.endpoint, server_key=t.server_key or None, hello_timeout_s=timeout)
            except ValueError as exc:
                raise CliError(str(exc), EXIT_USAGE) from None
            writer.follow(key, endpoint=t.endpoint, name=t.name)
        print(f"agentctl: recording {len(tgts)} node(s) to {args.out}; Ctrl-C stops", file=sys.stderr)
        while True:
            now = time.monotonic()
            if args.duration is not None and now - started >= args.duration:
                reason = f"duration {args.duration:g} s reached"
                break
            wait = 0.25 if args.duration is None else max(0.0, min(0.25, args.duration - (now - started)))
            for ev in links.poll(wait):
                if isinstance(ev, LinkSnapshot) and args.follow:
                    detail.start(ev)
                writer.record(key_of.get(ev.endpoint, ev.endpoint), ev)
                if isinstance(ev, LinkState) and ev.state == "down":
                    print(clean(f"agentctl: {ev.endpoint}: link down ({ev.detail}); gap recorded, retrying"), file=sys.stderr)
            detail.renew()
            rec.maybe_flush()
            if time.monotonic() >= next_progress:
                _progress(rec, time.monotonic() - started, tty)
                next_progress += PROGRESS_EVERY_S if tty else PROGRESS_EVERY_S_PIPE
    except (KeyboardInterrupt, _Stop):
        reason = "interrupted"
    except RecordingError as exc:
        links.close()
        signal.signal(signal.SIGTERM, old_term)
        raise CliError(str(exc), EXIT_FAILED) from None
    finally:
        signal.signal(signal.SIGTERM, old_term)
        detail.close()
    links.close()
    try:
        rec.close()
    except RecordingError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    if tty:
        print(file=sys.stderr)
    print(f"agentctl: {reason}; {rec.samples_written} samples, {rec.events_written} events, "
          f"{human_bytes(rec.size_bytes())} in {args.out}", file=sys.stderr)
    return EXIT_OK


class _RelayDetail:
    """``record --follow NODE``: hold a follow lease at the relay for each NODE and hand the
    follow's snapshot to the LinkRecorder, which then records the node's relayed stream."""

    def __init__(self, args: argparse.Namespace, writer: Any, keys: dict[str, str]) -> None:
        import os

        self.args, self.writer, self.keys = args, writer, keys
        self.client_name = f"agentctl-record-{os.getpid()}"
        self.held: dict[str, tuple[str, float]] = {}  # node -> (relay endpoint, renew at, monotonic)

    def _call(self, endpoint: str, req: Any) -> Any:
        from agentd.transport.client import NodeClient

        with NodeClient(endpoint, server_key=self.keys.get(endpoint) or None, timeout_s=self.args.timeout) as c:
            return c.call(req)

    def start(self, ev: Any) -> None:
        """A link (re)connected: at a relay, follow the nodes asked for (again: a fresh snapshot)."""
        from agentd.protocol.relay import Follow
        from agentd.transport.client import ClientError

        if "relay" not in ev.hello.capabilities:
            raise CliError(f"--follow: {ev.endpoint} ({ev.hello.node}) is no relay; record that node directly "
                           "with --node", EXIT_USAGE)
        for node in self.args.follow:
            try:
                reply = self._call(ev.endpoint, Follow(node=node, client=self.client_name))
            except ClientError as exc:
                raise CliError(f"--follow {node}: {exc}", EXIT_FAILED) from None
            self.writer.follow_detail(node, reply.snapshot)
            self.held[node] = (ev.endpoint, time.monotonic() + reply.lease_s / 2)

    def renew(self) -> None:
        from agentd.protocol.relay import Follow
        from agentd.transport.client import ClientError

        now = time.monotonic()
        for node, (endpoint, at) in list(self.held.items()):
            if now >= at:
                try:
                    reply = self._call(endpoint, Follow(node=node, client=self.client_name))
                    self.held[node] = (endpoint, now + reply.lease_s / 2)
                except ClientError as exc:  # the relay is away: the link's reconnect follows again
                    print(clean(f"agentctl: --follow {node}: {exc}"), file=sys.stderr)
                    self.held[node] = (endpoint, now + 5.0)

    def close(self) -> None:
        from agentd.protocol.relay import Unfollow
        from agentd.transport.client import ClientError

        for node, (endpoint, _) in self.held.items():
            try:
                self._call(endpoint, Unfollow(node=node, client=self.client_name))
            except ClientError:
                pass  # the lease ends by itself
        self.held.clear()


def _progress(rec: Recorder, elapsed_s: float, tty: bool) -> None:
    line = f"● REC {_hms(elapsed_s)}  samples {rec.samples_written}  events {rec.events_written}  size {human_bytes(rec.size_bytes())}"
    if tty:
        print("\r" + line + "   ", end="", file=sys.stderr, flush=True)
    else:
        print("agentctl: " + line, file=sys.stderr, flush=True)


# ---- replay ----


def _replay_items(reader: RecordingReader, t1: float, t2: float, nodes: list[str] | None) -> Iterator[tuple[float, dict[str, Any] | Any]]:
    """Everything recorded in [t1, t2] in time order: (wall_s, item), item a DerivedNode or a
    ready JSON object (job, event, link, gap). Samples come from the one derive()."""
    from agentd.protocol.messages import EventMsg, JobMsg
    from agentd.store.recording import LinkChange

    wanted = set(nodes) if nodes else None
    samples = ((d.wall_s, 1, d) for d in reader.iter_derived(t1, t2, nodes))

    def others() -> Iterator[tuple[float, int, Any]]:
        for w, node, item in reader.messages(t1 - 1e-6, t2):
            if wanted is not None and node not in wanted:
                continue
            if isinstance(item, JobMsg):
                yield w, 0, job_to_json(item.job, w)
            elif isinstance(item, EventMsg):
                yield w, 2, event_to_json(item.event)
            elif isinstance(item, LinkChange):
                yield w, 0, link_to_json(node, w, item.state, item.detail)

    gaps = sorted(((g.start_s, 0, gap_to_json(g.node, g.start_s, g.end_s, g.reason)) for g in reader.gaps()
                   if t1 <= g.start_s <= t2 and (wanted is None or g.node in wanted)), key=lambda x: x[0])
    for w, _, item in heapq.merge(samples, others(), gaps, key=lambda x: (x[0], x[1])):
        yield w, item


def _human_item(item: dict[str, Any]) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(item["ts"]))
    kind = item["type"]
    if kind == "job":
        text = f"job {item['job']['id']} {item['job']['name']}: {item['job']['state']}"
    elif kind == "event":
        text = f"{item['kind']}: {item['message']}"
    elif kind == "link":
        text = f"link {item['state']}" + (f" ({item['detail']})" if item["detail"] else "")
    else:
        text = f"gap of {item['end'] - item['ts']:.1f} s ({item['reason']})"
    return f"{when} {item['node']:<12} {text}"


def cmd_replay(args: argparse.Namespace) -> int:
    from agentd.metrics import DerivedNode

    with _open(args.file) as reader:
        try:
            rng = reader.time_range()
            if rng is None:
                raise CliError(f"recording {args.file} holds no samples; it was stopped before the first one arrived",
                               EXIT_USAGE)
            t1 = parse_time(args.t_from, rng[0])
            t2 = parse_time(args.t_to, rng[0])
            span = f"it runs from {_when(rng[0])} to {_when(rng[1])} ({rng[1] - rng[0]:.0f} s)"
            if t1 is not None and t1 > rng[1]:
                raise CliError(f"--from {args.t_from} is past the end of {args.file}; {span}", EXIT_USAGE)
            if t2 is not None and t2 < rng[0]:
                raise CliError(f"--to {args.t_to} is before the start of {args.file}; {span}", EXIT_USAGE)
            if t1 is not None and t2 is not None and t2 < t1:
                raise CliError(f"--to {args.t_to} is before --from {args.t_from}", EXIT_USAGE)
            # The global --node names recorded nodes here (repeatable), not endpoints.
            wanted = list(getattr(args, "node", None) or [])
            unknown = [n for n in wanted if n not in reader.nodes()]
            if unknown:
                raise CliError(f"node {unknown[0]!r} is not in {args.file}; it holds: {', '.join(reader.nodes())}", EXIT_USAGE)
            speed = args.speed
            if speed is not None and speed <= 0:
                raise CliError(f"--speed {speed:g} must be greater than 0", EXIT_USAGE)
            as_json = getattr(args, "json", False)
            t0_wall = t0_play = None
            lo = rng[0] if t1 is None else max(t1, rng[0])
            hi = rng[1] if t2 is None else min(t2, rng[1])
            for w, item in _replay_items(reader, lo, hi, wanted or None):
                if speed:
                    if t0_wall is None:
                        t0_wall, t0_play = w, time.monotonic()
                    delay = t0_play + (w - t0_wall) / speed - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                if isinstance(item, DerivedNode):
                    line = _json_line(derived_to_json(item)) if as_json else clean(human_watch_line(item))
                else:
                    line = _json_line(item) if as_json else clean(_human_item(item))
                sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except RecordingError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
        # damaged chunks were skipped, the rest replayed: say so once, on stderr
        summary = reader.damage_summary()
        if summary:
            print(f"agentctl: warning: {summary}", file=sys.stderr)
    return EXIT_OK


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _json_line(obj: Any) -> str:
    """Strict JSON (a recording's counters may derive to inf or NaN: those become null)."""
    try:
        return json.dumps(obj, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(obj), allow_nan=False)


# ---- recording info / set ----


def _info_text(info: RecordingInfo) -> str:
    lines = [
        f"title:     {info.title}",
        f"file:      {info.path} ({human_bytes(info.size_bytes)}, schema {info.schema_version}, written by {info.app_version})",
        f"start:     {_when(info.start_s)}",
        f"end:       {_when(info.end_s)}",
        f"duration:  {_hms(info.duration_s)}",
        f"nodes:     {len(info.nodes)}: " + ", ".join(f"{n} ({info.samples.get(n, 0)} samples)" for n in info.nodes),
        f"events:    {info.events} ({info.actions} control actions)",
        f"gaps:      {len(info.gaps)}",
    ]
    for g in info.gaps:
        lines.append(f"  {g.node}: {_when(g.start_s)} for {g.duration_s:.1f} s ({g.reason})")
    if info.notes:
        lines.append(f"notes:     {info.notes}")
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    with _open(args.file) as reader:
        try:
            info = reader.info()
        except RecordingError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
    if getattr(args, "json", False):
        print(json.dumps(info.to_json()))
    else:
        print(clean(_info_text(info)))
    return EXIT_OK


def cmd_set(args: argparse.Namespace) -> int:
    if args.title is None and args.notes is None:
        raise CliError("nothing to change; give --title and/or --notes", EXIT_USAGE)
    with _open(args.file) as reader:
        try:
            reader.set_meta(title=args.title, notes=args.notes)
        except RecordingError as exc:
            raise CliError(str(exc), EXIT_FAILED) from None
    return EXIT_OK
