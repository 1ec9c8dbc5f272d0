"""agentctl health GROUP: the straggler and hang radar's verdict on every rank of a group."""

from __future__ import annotations

import argparse

from agentd.cli.common import CliError, Verbs, call, cell, client_for_job, emit_json
from agentd.protocol.radar import GroupHealth, GroupHealthReply

_STATUS_STYLE = {"ok": "green", "straggler": "yellow", "hung": "bold red", "waiting": "", "unknown": "dim"}


def register(verbs: Verbs) -> None:
    """Add ``health``; its help is the ``group_health`` command's documentation."""
    p = verbs.add("health", command=GroupHealth)
    p.add_argument("group", metavar="GROUP", help="the group id, NODE.run-N (NODE: the node of rank 0)")
    p.set_defaults(func=cmd_health)


def cmd_health(args: argparse.Namespace) -> int:
    client, group = client_for_job(args, args.group)
    try:
        reply = call(client, GroupHealth(group=group))
    finally:
        client.close()
    if not isinstance(reply, GroupHealthReply):
        raise CliError(f"node answered group_health for {group!r} with {type(reply).__name__}", 1)
    if args.json:
        emit_json([{"rank": r.rank, "node": r.node, "job_id": r.job_id, "role": r.role, "status": r.status,
                    "class": r.likely, "reason": r.reason, "since_s": r.since_s, "evidence": r.evidence,
                    "evidence_file": r.evidence_file} for r in reply.ranks])
        return 0
    if not reply.ranks:
        print(f"group {reply.group}: {reply.message or 'no ranks known yet'}")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold", title=f"group {reply.group} (leader {reply.leader})")
    for col in ("RANK", "NODE", "JOB", "STATUS", "CLASS", "WHY", "EVIDENCE"):
        table.add_column(col)
    for r in reply.ranks:
        style = _STATUS_STYLE.get(r.status, "")
        status = f"[{style}]{r.status}[/{style}]" if style else r.status
        table.add_row(str(r.rank), cell(r.node), cell(r.job_id), status, cell(r.likely), cell(r.reason),
                      cell(r.evidence_file))
    Console().print(table)
    return 0
