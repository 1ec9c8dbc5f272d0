"""agentctl verbs for work: submit, jobs, show, pause, resume, priority, cancel, logs, migrate."""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import msgspec

from agentd.cli import groups
from agentd.cli.common import (
    CliError,
    Verbs,
    call,
    cell,
    clean,
    client_for_job,
    cluster_targets,
    connect,
    each_node,
    emit_json,
    float_over,
    int_in,
    key_text,
    priority_value,
    targets,
)
from agentd.cli.group_move import migrate_group
from agentd.cli.watchfmt import job_json as _job_json
from agentd.control.spec import parse_size
from agentd.metrics.units import human_bytes
from agentd.protocol import JobInfo, JobSpec
from agentd.protocol.limits import MAX_GPUS, PRIORITY_MAX, PRIORITY_MIN
from agentd.protocol.messages import (
    Cancel,
    JobReply,
    Jobs,
    JobsReply,
    Logs,
    LogsReply,
    Migrate,
    Pause,
    Priority,
    Request,
    Resume,
    Show,
    Submit,
)
from agentd.transport.client import ClientError


def register(verbs: Verbs) -> None:
    """Add the job verbs; each one's help is its protocol command's documentation."""
    p = verbs.add("submit", command=Submit,
                  description="Run ARGV as a job on one node (--node NAME from --cluster, or an endpoint). "
                                   "Prints the job id (NODE.N).")
    p.add_argument("--spec", metavar="FILE", help="job spec file (TOML or JSON); flags override it")
    p.add_argument("--name", help="a name for the job, shown in lists")
    p.add_argument("--gpus", type=int_in(0, MAX_GPUS, "--gpus"), metavar="K", help="how many GPUs the job gets (default 0)")
    p.add_argument("--priority", type=priority_value, metavar="P",
                   help=f"{PRIORITY_MIN}..{PRIORITY_MAX}, higher is more important (default 0)")
    p.add_argument("--cpus", type=float_over(0, "--cpus"), metavar="C", help="CPU limit in cores")
    p.add_argument("--memory", metavar="SIZE", help="memory limit: bytes or 4G, 512MiB...")
    p.add_argument("--kind", choices=["job", "agent"], help="job (default) or agent (an LLM agent reporting tool calls)")
    p.add_argument("--checkpoint-signal", metavar="SIG", help="declares a checkpoint contract (e.g. SIGUSR1)")
    p.add_argument("--checkpoint-timeout", type=float_over(0, "--checkpoint-timeout"), metavar="S",
                   help="seconds the job has to write its checkpoint after the signal")
    p.add_argument("--cwd", metavar="DIR", help="working directory of the job (default: the home directory of its owner)")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="an environment variable for the job, repeatable")
    p.add_argument("--label", action="append", default=[], metavar="K=V", help="a label on the job, repeatable")
    p.add_argument("--counter", action="append", default=[], metavar="NAME", help="an app metric that only grows (charted as a rate)")
    p.add_argument("--shell", action="store_true", help="run ARGV as one shell command line")
    groups.add_submit_flags(p)
    p.add_argument("--on", metavar="NODE", default="",
                   help="with --node RELAY: the node behind the relay that runs the job (docs/relays.md)")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="the command, after --")
    p.set_defaults(func=cmd_submit)

    p = verbs.add("jobs", command=Jobs, help="list jobs on every node")
    p.add_argument("--active", action="store_true", help="hide finished jobs")
    p.add_argument("--all", action="store_true",
                   help="also list the superseded hops of migrated jobs (state 'migrated'); by default a job that "
                        "moved shows once, as its live hop")
    p.add_argument("--ranks", action="store_true", help="list each group's ranks beneath its line")
    p.set_defaults(func=cmd_jobs)
    p = verbs.add("show", command=Show)
    p.add_argument("job", help="job id NODE.N (a bare N with one node), or a group id NODE.run-N")
    p.set_defaults(func=cmd_show)
    for verb, request in (("pause", Pause), ("resume", Resume)):
        p = verbs.add(verb, command=request)
        p.add_argument("job", nargs="+", help="job ids NODE.N (a bare N with one node), or group ids NODE.run-N")
        p.set_defaults(func=cmd_pause_resume, verb=verb)
    p = verbs.add("priority", command=Priority)
    p.add_argument("job", help="job id NODE.N (a bare N with one node)")
    p.add_argument("priority", type=priority_value,
                   help=f"{PRIORITY_MIN}..{PRIORITY_MAX}, higher is more important (negative numbers are values)")
    p.set_defaults(func=cmd_priority)
    p = verbs.add("cancel", command=Cancel)
    p.add_argument("job", nargs="+", help="job ids NODE.N (a bare N with one node)")
    p.add_argument("--grace", type=float_over(0, "--grace", inclusive=True), default=10.0, metavar="S",
                   help="seconds between SIGTERM and SIGKILL (default 10)")
    p.set_defaults(func=cmd_cancel)
    p = verbs.add("logs", command=Logs, description="Print a job's stdout (or --stderr), the end first; --follow keeps printing.")
    p.add_argument("job", help="job id NODE.N (a bare N with one node)")
    p.add_argument("--stderr", action="store_true", help="show the job's stderr instead of its stdout")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing what the job writes until it ends")
    p.add_argument("--bytes", type=int_in(1, None, "--bytes"), default=65536, metavar="N",
                   help="how much of the end to show first (default 65536)")
    p.add_argument("--raw", action="store_true",
                   help="write the log's bytes unchanged (default: escape sequences and control characters are shown as \\xNN)")
    p.set_defaults(func=cmd_logs)
    p = verbs.add("migrate", command=Migrate)
    p.add_argument("job", help="job id NODE.N, or a group id NODE.run-N (with --nodes)")
    p.add_argument("--to", metavar="NODE", help="a node name from --cluster, or an endpoint")
    p.add_argument("--nodes", metavar="A,B,...",
                   help="a group's new nodes from --cluster, in node-rank order (as many as it runs on now)")
    p.add_argument("--wait", dest="move_wait_s", type=float_over(0, "--wait"), default=300.0, metavar="S",
                   help="how long to follow a group's move before giving up waiting (default 300)")
    p.add_argument("--restart", action="store_true", help="allow starting from scratch when the job cannot checkpoint")
    p.add_argument("--resume", action="store_true", help="a paused job arrives running")
    p.add_argument("--no-wait", action="store_true", help="return once the migration has started")
    p.set_defaults(func=cmd_migrate)


def _kv(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise CliError(f"{flag} {item!r} is not KEY=VALUE", 2)
        out[k] = v
    return out


def build_spec(args: argparse.Namespace) -> JobSpec:
    data: dict[str, Any] = {}
    if args.spec:
        path = Path(args.spec)
        try:
            text = path.read_text()
            data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except FileNotFoundError:
            raise CliError(f"spec file {path} does not exist", 2) from None
        except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise CliError(f"spec file {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}", 2) from None
        data = data.get("job", data) if isinstance(data, dict) else data
        if not isinstance(data, dict):
            raise CliError(f"spec file {path} must hold a table of job fields", 2)
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if argv:
        data["argv"] = [" ".join(argv)] if args.shell else argv
    if args.shell:
        data["shell"] = True
    for key in ("name", "gpus", "priority", "cpus", "kind", "cwd"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    if args.memory is not None:
        try:
            data["memory_bytes"] = parse_size(args.memory)
        except ValueError as exc:
            raise CliError(f"--memory: {exc}", 2) from None
    elif isinstance(data.get("memory"), (str, int)):
        try:
            data["memory_bytes"] = parse_size(data.pop("memory"))
        except ValueError as exc:
            raise CliError(f"spec field memory: {exc}", 2) from None
    if args.checkpoint_signal or args.checkpoint_timeout:
        contract = dict(data.get("checkpoint") or {})
        if args.checkpoint_signal:
            contract["signal"] = args.checkpoint_signal
        if args.checkpoint_timeout:
            contract["timeout_s"] = args.checkpoint_timeout
        data["checkpoint"] = contract
    if args.env:
        data["env"] = {**data.get("env", {}), **_kv(args.env, "--env")}
    if args.label:
        data["labels"] = {**data.get("labels", {}), **_kv(args.label, "--label")}
    if args.counter:
        data["counters"] = sorted(set(data.get("counters", [])) | set(args.counter))
    if not data.get("argv"):
        raise CliError("nothing to run: give the command after --, e.g. agentctl submit -- python train.py", 2)
    try:
        return msgspec.convert(data, JobSpec)
    except msgspec.ValidationError as exc:
        raise CliError(f"bad job spec: {exc}", 2) from None


def cmd_submit(args: argparse.Namespace) -> int:
    if groups.wants_group(args):
        argv = list(args.argv)
        return groups.submit_group(args, argv[1:] if argv[:1] == ["--"] else argv, _kv(args.env, "--env"))
    spec = build_spec(args)
    ts = targets(args)
    if len(ts) != 1:
        names = ", ".join(t.name or t.endpoint for t in ts)
        raise CliError(f"submit goes to one node; {len(ts)} were given ({names}): pick one with --node NAME or --node ENDPOINT", 2)
    with connect(args, ts[0]) as c:
        reply = call(c, Submit(spec=spec, node=args.on))
    assert isinstance(reply, JobReply)
    if args.json:
        emit_json({"id": reply.job.id, "node": reply.job.node, "state": reply.job.state})
    else:
        print(reply.job.id)
    return 0


def _age(job: JobInfo) -> str:
    # A migrated job's age counts from its first submit, wherever that was.
    start = job.first_submitted_s if job.lineage and job.first_submitted_s else (job.started_s or job.submitted_s)
    if not start:
        return ""
    secs = int((job.ended_s or time.time()) - start)
    return f"{secs // 3600}h{secs % 3600 // 60:02d}m" if secs >= 3600 else f"{secs // 60}m{secs % 60:02d}s"


def cmd_jobs(args: argparse.Namespace) -> int:
    jobs: list[JobInfo] = []
    errors = []
    for _target, c in each_node(args):
        try:
            reply = c.call(Jobs(active_only=args.active))
        except ClientError as exc:
            errors.append(str(exc))
            continue
        assert isinstance(reply, JobsReply)
        jobs += reply.jobs
    if not args.all:
        hidden = [j for j in jobs if j.state == "migrated"]
        jobs = [j for j in jobs if j.state != "migrated"]
        if hidden and not args.json:
            print(f"agentctl: {len(hidden)} superseded hop{'s' if len(hidden) != 1 else ''} of migrated jobs hidden "
                  "(--all lists them)", file=sys.stderr)
    rows, singles = groups.group_rows(jobs)
    if args.json:
        ranks_of = {r.id: [j for j in jobs if j.spec.group and j.spec.group.id == r.id] for r in rows}
        emit_json([_job_json(j) for j in singles] + [groups.group_json(r, ranks_of[r.id], _job_json) for r in rows])
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(box=None, header_style="bold")
        for col in ("ID", "NAME", "NODE", "STATE", "PRIO", "GPUS", "PID", "AGE", "METRICS"):
            table.add_column(col)
        for r in rows:
            ranks = sorted((j for j in jobs if j.spec.group and j.spec.group.id == r.id), key=groups.rank_of)
            state = r.state + (" (mixed)" if r.partial else "") + (f" — {r.reason}" if r.reason and r.state in ("queued", "failed") else "")
            table.add_row(cell(r.id), cell(f"{r.name} [{r.ranks}/{r.world_size} ranks]"), cell(",".join(r.nodes)),
                          cell(state), f"{ranks[0].priority:+d}" if ranks else "", str(r.gpus or "—"), "", _age(ranks[0]) if ranks else "", "")
            if args.ranks:
                for j in ranks:
                    table.add_row(cell(f"  └ {j.id}"), cell(f"rank {groups.rank_of(j)}"), cell(j.node), cell(j.state),
                                  f"{j.priority:+d}", ",".join(map(str, j.gpus)) or "—", str(j.pid or ""), _age(j), "")
        for j in singles:
            metrics = " ".join(f"{k}={v:.4g}" for k, v in sorted(j.metrics.items())[:4])
            state = j.state + (f" (#{j.queue_position})" if j.queue_position else "") + (" [slurm]" if j.backend == "slurm" else "")
            table.add_row(cell(j.id), cell(j.name), cell(j.node), cell(state), f"{j.priority:+d}",
                          ",".join(map(str, j.gpus)) or "—", str(j.pid or ""), _age(j), cell(metrics))
        Console().print(table)
    for e in errors:
        print(f"agentctl: {clean(e)}", file=sys.stderr)
    return 2 if errors else 0


def _print_job(job: JobInfo, message: str = "") -> None:
    print(clean(f"{job.id}  {job.name}  {job.state}" + (f"  ({message})" if message else "") + (f"  — {job.reason}" if job.reason else "")))


def cmd_show(args: argparse.Namespace) -> int:
    if groups.is_group_id(args.job):
        return groups.show_group(args, args.job, _job_json)
    c, job_id = client_for_job(args, args.job)
    with c:
        reply = call(c, Show(job=job_id))
    assert isinstance(reply, JobReply)
    if args.json:
        emit_json(_job_json(reply.job))
        return 0
    j = reply.job
    rows = [("id", j.id), ("name", j.name), ("node", j.node), ("state", j.state), ("reason", j.reason),
            ("priority", f"{j.priority:+d}"), ("kind", j.spec.kind), ("argv", " ".join(j.spec.argv)),
            ("pid", j.pid), ("pids", " ".join(map(str, j.pids))), ("gpus", ",".join(map(str, j.gpus)) or "—"),
            ("control", j.control), ("cgroup", j.cgroup), ("exit code", j.exit_code), ("age", _age(j)),
            ("gpu memory held", human_bytes(j.gpu_mem_held_bytes) if j.gpu_mem_held_bytes else ""),
            ("checkpoint", f"{j.spec.checkpoint.signal}, {j.spec.checkpoint.timeout_s:g} s" if j.spec.checkpoint else "none"),
            ("resumed from", j.resumed_from), ("migrated to", j.migrated_to),
            ("lineage", " → ".join([*j.lineage, j.id] + ([j.migrated_to] if j.migrated_to else [])) if j.lineage or j.migrated_to else ""),
            ("first submitted", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.first_submitted_s))
             if j.lineage and j.first_submitted_s else "")]
    rows += [(f"metric {k}", f"{v:.6g}") for k, v in sorted(j.metrics.items())]
    for name, value in rows:
        if value not in (None, ""):
            print(clean(f"{name:>16}: {value}"))
    for tc in j.tool_calls[-10:]:
        print(clean(f"{'tool call':>16}: {tc.name} exit={tc.exit_code} cpu={tc.cpu_s} peak={human_bytes(tc.mem_peak_bytes)}"))
    return 0


def _act(args: argparse.Namespace, job: str, make: Callable[[str], Request]) -> JobReply:
    c, job_id = client_for_job(args, job)
    with c:
        reply = call(c, make(job_id))
    assert isinstance(reply, JobReply)
    return reply


def _report(args: argparse.Namespace, replies: list[JobReply]) -> None:
    if args.json:
        emit_json([_job_json(r.job) for r in replies] if len(replies) > 1 else _job_json(replies[0].job))
    else:
        for r in replies:
            _print_job(r.job, r.message)


def _one(args: argparse.Namespace, job: str, make: Callable[[str], Request]) -> int:
    _report(args, [_act(args, job, make)])
    return 0


def cmd_pause_resume(args: argparse.Namespace) -> int:
    kind = Pause if args.verb == "pause" else Resume
    if any(groups.is_group_id(j) for j in args.job):
        return max(groups.group_action(args, j, args.verb) if groups.is_group_id(j) else
                   _one(args, j, lambda jid: kind(job=jid)) for j in args.job)
    _report(args, [_act(args, j, lambda jid: kind(job=jid)) for j in args.job])
    return 0


def cmd_priority(args: argparse.Namespace) -> int:
    if groups.is_group_id(args.job):
        return groups.group_action(args, args.job, "priority", priority=args.priority)
    _report(args, [_act(args, args.job, lambda jid: Priority(job=jid, priority=args.priority))])
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    args.timeout = max(args.timeout, min(args.grace, 10.0) + 10)  # the reply waits for the end at most 10 s
    if any(groups.is_group_id(j) for j in args.job):
        return max(groups.group_action(args, j, "cancel", grace_s=args.grace) if groups.is_group_id(j) else
                   _one(args, j, lambda jid: Cancel(job=jid, grace_s=args.grace))
                   for j in args.job)
    _report(args, [_act(args, j, lambda jid: Cancel(job=jid, grace_s=args.grace)) for j in args.job])
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    c, job_id = client_for_job(args, args.job)
    stream: Literal["stdout", "stderr"] = "stderr" if args.stderr else "stdout"
    offset = -abs(args.bytes)
    out = sys.stdout.buffer
    with c:
        while True:
            reply = call(c, Logs(job=job_id, stream=stream, offset=offset))
            assert isinstance(reply, LogsReply)
            # a job's output may hold escape sequences aimed at whoever reads it on a terminal
            out.write(reply.data if args.raw else clean(reply.data.decode("utf-8", "replace")).encode())
            out.flush()
            offset = reply.offset
            if not args.follow:
                return 0
            if reply.eof:
                state = call(c, Show(job=job_id))
                assert isinstance(state, JobReply)
                if state.job.state in ("succeeded", "failed", "cancelled", "migrated"):
                    return 0
                time.sleep(0.5)


def cmd_migrate(args: argparse.Namespace) -> int:
    if groups.is_group_id(args.job):
        if args.to:
            raise CliError(f"{args.job} is a group: name its new nodes with --nodes a,b,... (not --to)", 2)
        return migrate_group(args, args.job)
    if args.nodes:
        raise CliError(f"--nodes moves a group (NODE.run-N); move job {args.job} with --to NODE", 2)
    if not args.to:
        raise CliError(f"migrate {args.job} where? give --to NODE (a node name from --cluster, or an endpoint)", 2)
    target = args.to
    server_key = ""
    if "://" not in target:
        named = [t for t in cluster_targets(args) if t.name == target]
        if not named:
            where = f"a node in {args.cluster}" if args.cluster else "a node name (that needs --cluster FILE)"
            raise CliError(f"--to {target!r} is neither an endpoint (tcp://HOST:PORT) nor {where}", 2)
        target, server_key = named[0].endpoint, key_text(named[0])
    c, job_id = client_for_job(args, args.job)
    if _same_node(args, c, job_id, args.to, target):
        raise CliError(f"cannot migrate {job_id} to {args.to}: the job already runs on that node; "
                       "pick another node with --to", 1)
    with c:
        reply = call(c, Migrate(job=job_id, target=target, target_key=server_key, restart=args.restart, resume=args.resume))
        assert isinstance(reply, JobReply)
        if args.no_wait:
            _report(args, [reply])
            return 0
        return _follow_migration(args, c, reply.job, getattr(reply, "migration_id", "") or "")


def _same_node(args: argparse.Namespace, c: Any, job_id: str, to: str, endpoint: str) -> bool:
    """Whether ``--to`` names the node that holds ``job_id`` (by name, or by its endpoint)."""
    node = job_id.rpartition(".")[0]
    if node and to == node:
        return True
    return endpoint == getattr(c, "endpoint", None)


def _follow_migration(args: argparse.Namespace, c: Any, job: JobInfo, migration_id: str = "") -> int:
    """Progress on stderr until the job runs elsewhere (0) or this migration rolled back (1).

    Only this attempt counts: until the job's ``migration`` names ``migration_id``, what it
    holds is an earlier attempt's outcome (a failure then says nothing about this one)."""
    shown = ""
    while True:
        mig = job.migration
        if migration_id and mig.get("id") != migration_id:
            mig = {"phase": "requested"}
        phase = mig.get("phase", "")
        total, sent = mig.get("bytes_total") or 0, mig.get("bytes_sent") or 0
        line = f"{job.id}: {phase or job.state}" + (f" {human_bytes(sent)}/{human_bytes(total)}" if total else "")
        if line != shown:
            print(clean(line), file=sys.stderr, flush=True)
            shown = line
        if job.state == "migrated":
            if args.json:
                emit_json(_job_json(job))
            else:
                print(clean(f"{job.id} now runs as {job.migrated_to}"))
            return 0
        if phase in ("rolled_back", "failed", "refused") or (not phase and job.state in ("succeeded", "failed", "cancelled")):
            reason = mig.get("reason") or job.reason or "the migration did not complete"
            raise CliError(f"migration of {job.id} did not complete: {reason}; the job is {job.state} on {job.node}", 1)
        if job.state == "queued" and job.migrated_to:
            print(clean(f"{job.id} moved to the queue of {job.migrated_to}"))
            return 0
        time.sleep(0.3)
        reply = call(c, Show(job=job.id))
        assert isinstance(reply, JobReply)
        job = reply.job
