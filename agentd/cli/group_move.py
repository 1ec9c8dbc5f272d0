"""``agentctl migrate GROUP --nodes x,y``: move a whole group to another node set.

1. Find the group's ranks (all active), ask the new rank 0's node for a free rendezvous port and
   plan each rank's place (agentd.groups.regroup: ranks of old node rank k go to the k-th new node).
2. Pause the group (one ``group_action`` per node, at once) if it runs: a rank then moves only
   when its own daemon asks it to checkpoint, never because a peer stopped first.
3. Migrate every rank at once with its ``regroup``: each source checkpoints its rank, sends the
   checkpoint and commits (never two copies of a rank); on its new node the rank waits, queued,
   for the group's new leader, which starts all ranks together from their checkpoints.
4. Follow until every rank runs on its new node (or says why not).

If no rank could start moving, the group is resumed where it was. A rank whose move rolled back
runs again on its old node with its old rendezvous, and the command says which ranks moved.
"""

from __future__ import annotations

import argparse
import sys
import time
from urllib.parse import urlsplit

from agentd.cli.common import CliError, Target, call, clean, connect, emit_json, key_text
from agentd.cli.groups import act_on_nodes, find_members, named_targets, parallel, rank_of
from agentd.groups.regroup import Placement, RegroupError, plan_move
from agentd.protocol.gang import GroupAction, GroupOpen, GroupOpenReply
from agentd.protocol.jobs import TERMINAL_STATES, JobInfo
from agentd.protocol.messages import JobReply, Migrate, MigrateReply, Show

POLL_S = 0.3


def migrate_group(args: argparse.Namespace, group_id: str) -> int:
    names = [n.strip() for n in (args.nodes or "").split(",") if n.strip()]
    if not names:
        raise CliError(f"moving group {group_id} needs --nodes a,b,... (the new node set, in node-rank order)", 2)
    members = find_members(args, group_id)
    ranks = sorted([j for _, js in members for j in js if j.state not in TERMINAL_STATES], key=rank_of)
    source_of = {j.id: t for t, js in members for j in js}
    new = named_targets(args, names)
    with connect(args, new[names[0]]) as c:
        opened = call(c, GroupOpen())  # for its free port (the group keeps its id)
    assert isinstance(opened, GroupOpenReply)
    addr = urlsplit(new[names[0]].endpoint).hostname or "127.0.0.1"
    try:
        plan = plan_move(group_id, ranks, [(n, new[n].endpoint) for n in names], addr, opened.master_port,
                         keys=[key_text(new[n]) for n in names])
    except RegroupError as e:
        raise CliError(e.message, 1) from None
    running = any(j.state == "running" for j in ranks)
    nodes = [t for t, _ in members]
    if running:
        _, errors = act_on_nodes(args, nodes, GroupAction(group=group_id, action="pause"))
        if errors:
            act_on_nodes(args, nodes, GroupAction(group=group_id, action="resume"))
            raise CliError(f"group {group_id} was not moved: pausing it failed ({errors[0]}); it runs on", 1)

    def start(p: Placement) -> tuple[Target, str]:
        with connect(args, source_of[p.job_id]) as c:
            reply = call(c, Migrate(job=p.job_id, target=p.target, target_key=key_text(new[p.target_name]),
                                    resume=running, regroup=p.regroup))
        assert isinstance(reply, MigrateReply)
        return source_of[p.job_id], reply.migration_id

    started = parallel([lambda p=p: start(p) for p in plan])  # type: ignore[misc]
    refused = [(p, r) for p, r in zip(plan, started, strict=True) if isinstance(r, CliError)]
    if len(refused) == len(plan):
        if running:
            act_on_nodes(args, nodes, GroupAction(group=group_id, action="resume"))
        raise CliError(f"group {group_id} was not moved: {refused[0][1]}; it {'runs on' if running else 'stays'} "
                       "where it was", refused[0][1].code)
    print(clean(f"moving group {group_id} ({len(plan)} ranks) to {', '.join(names)}"), file=sys.stderr, flush=True)
    deadline = time.monotonic() + args.move_wait_s
    outcomes = parallel([lambda p=p, r=r: _follow(args, p, r, deadline)  # type: ignore[misc]
                         for p, r in zip(plan, started, strict=True) if not isinstance(r, CliError)])
    moved = [o for o in outcomes if not isinstance(o, CliError)]
    problems = [str(r) for _, r in refused] + [str(o) for o in outcomes if isinstance(o, CliError)]
    arrived = _wait_started(args, group_id, len(plan), deadline) if not problems else []
    went = [p for p, r in zip(plan, started, strict=True) if not isinstance(r, CliError)]
    pairs = [(p, o) for p, o in zip(went, outcomes, strict=True) if not isinstance(o, CliError)]
    state = {j.spec.group.rank: j.state for j in arrived if j.spec.group}
    if args.json:
        emit_json({"group": group_id, "nodes": names, "moved": len(moved), "ranks": len(plan),
                   "rendezvous": f"{addr}:{opened.master_port}", "errors": problems,
                   "placements": [{"rank": p.regroup.member.rank, "from": p.job_id, "to": o.migrated_to,
                                   "node": p.target_name, "state": state.get(p.regroup.member.rank, "")}
                                  for p, o in pairs]})
    else:
        for p, o in pairs:
            rank = p.regroup.member.rank
            print(clean(f"rank {rank}: {p.job_id} -> {o.migrated_to} on {p.target_name} ({state.get(rank, 'moving')})"))
    for msg in problems:
        print(f"agentctl: {clean(msg)}", file=sys.stderr)
    if problems:
        print(f"agentctl: group {group_id} moved {len(moved)} of {len(plan)} ranks; the others are on their old "
              "nodes (see `agentctl show " + group_id + "`)", file=sys.stderr)
        return 1
    if len(state) < len(plan):
        print(f"agentctl: the ranks arrived but the group has not started yet: {group_id} waits for its new "
              "leader's admission round (see `agentctl show " + group_id + "`)", file=sys.stderr)
    return 0


def _follow(args: argparse.Namespace, p: Placement, started: tuple[Target, str], deadline: float) -> JobInfo:
    """Poll the source until rank ``p`` left (migrated) or its move ended otherwise (CliError)."""
    source, migration_id = started
    with connect(args, source) as c:
        while True:
            reply = call(c, Show(job=p.job_id))
            assert isinstance(reply, JobReply)
            job = reply.job
            mig = job.migration if job.migration.get("id") == migration_id else {}
            if job.state == "migrated" and job.migrated_to:
                return job
            if mig.get("phase") in ("rolled_back", "failed", "refused"):
                raise CliError(f"rank {p.regroup.member.rank} ({p.job_id}) did not move: "
                               f"{mig.get('reason') or job.reason or mig.get('phase')}; it is {job.state} on {job.node}", 1)
            if time.monotonic() > deadline:
                raise CliError(f"rank {p.regroup.member.rank} ({p.job_id}) is still {mig.get('phase') or job.state} "
                               f"after {args.move_wait_s:g} s; follow it with `agentctl show {p.job_id}`", 1)
            time.sleep(POLL_S)


def _wait_started(args: argparse.Namespace, group_id: str, world: int, deadline: float) -> list[JobInfo]:
    """The group's ranks once all run again on the new nodes (what there is at the deadline)."""
    ranks: list[JobInfo] = []
    while True:
        try:
            ranks = [j for _, js in find_members(args, group_id) for j in js if j.state not in TERMINAL_STATES]
        except CliError:
            ranks = []
        if len(ranks) == world and all(j.state in ("running", "paused") for j in ranks):
            return ranks
        if time.monotonic() > deadline:
            return [j for j in ranks if j.state in ("running", "paused")]
        time.sleep(POLL_S)
