"""The node side of gang jobs: this node's ranks of a group, held, reserved and started as one.

Ranks of a group (``JobSpec.group``) are submitted by their user like any job, and queued *held
for the gang*: the local scheduler never starts them (:meth:`JobCore._schedule` leaves them out
of its plan, so they block nothing). The group's leader (rank 0's node daemon, see
agentd.gang_service) runs admission rounds through the daemon-role verbs below:

- :meth:`gang_prepare`: if every rank of the group expected here is queued and together they fit
  the node's free resources now, reserve those resources (GPUs, declared CPUs and memory) until a
  deadline (the TTL) and say ready; else reserve nothing and say what is missing.
- :meth:`gang_start`: start the reserved ranks. A reservation that lapsed is retried once on the
  spot; if the ranks no longer fit, the start is refused (CONFLICT) and nothing starts here.
- :meth:`gang_release`: drop the reservation; the ranks stay queued with the leader's reason.
- Reservations past their deadline are dropped by :meth:`_expire_gang_locked` (every tick):
  no GPU is held idle for a group longer than the TTL, whatever happened to the leader.

These verbs act only on ranks that already exist on this node; none creates a job.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from agentd.control import admission, statedir
from agentd.control.cancelling import Cancelling
from agentd.control.job import Job
from agentd.protocol.errors import ErrorCode, ProtocolError
from agentd.protocol.jobs import TERMINAL_STATES, JobInfo

GROUP_IDS_FILE = "group-ids"  # the high-water mark of this node's group counter


class GangNode(Cancelling):
    """Gang holding, reservation and start of this node's ranks (see the module docstring)."""

    def _members(self, group: str) -> list[Job]:
        """This node's ranks of ``group``, by rank (lock held). A rank that migrated away (its
        group moved) is no longer one of them: it lives on its new node."""
        out = [j for j in self._jobs.values()
               if j.spec.group is not None and j.spec.group.id == group and j.state != "migrated"]
        return sorted(out, key=lambda j: (j.spec.group.rank if j.spec.group else 0, j.n))

    def group_members(self, group: str) -> list[JobInfo]:
        """This node's ranks of ``group`` (every state), by rank."""
        with self._lock:
            return [self._info(j) for j in self._members(group)]

    def led_groups(self) -> list[str]:
        """Groups whose rank 0 lives here and that have an unfinished rank here or had one
        recently: the groups this node leads."""
        with self._lock:
            return sorted({j.spec.group.id for j in self._jobs.values()
                           if j.spec.group is not None and j.spec.group.rank == 0 and j.spec.group.leader
                           and j.state != "migrated"})

    def next_group_number(self) -> int:
        """The next N of this node's group ids ``NODE.run-N``, never reused (kept in the state
        dir, written before it is handed out)."""
        with self._lock:
            path = self.state_dir / GROUP_IDS_FILE
            try:
                last = int(json.loads(path.read_text()).get("last", 0))
            except (OSError, ValueError, AttributeError):
                last = 0
            n = last + 1
            _write_atomic(path, json.dumps({"last": n}).encode())
            return n

    # ---- daemon verbs ----------------------------------------------------------------
    def gang_prepare(self, group: str, ttl_s: float) -> tuple[bool, int, int, str]:
        """Reserve all of this node's queued ranks of ``group`` for ``ttl_s`` seconds, or none.
        Returns (ready, ranks queued here, ranks expected here, reason when not ready)."""
        with self._lock:
            members = self._members(group)
            if not members:
                return False, 0, 0, f"no rank of group {group} on node {self.node}"
            expected = members[0].spec.group.local_world_size if members[0].spec.group else 1
            ended = [j for j in members if j.state in TERMINAL_STATES]
            if ended:
                return False, len(members), expected, (f"rank {_rank(ended[0])} ({ended[0].id}) on node {self.node} "
                                                       f"already ended ({ended[0].state})")
            queued = [j for j in members if j.state == "queued" and not j.starting]
            if len(queued) < len(members):
                return False, len(members), expected, f"ranks of group {group} on node {self.node} are already started"
            if len(queued) < expected:
                return False, len(queued), expected, (f"node {self.node} has {len(queued)} of its {expected} ranks "
                                                      "submitted")
            for j in queued:  # a new round replaces this group's earlier reservation
                if self._gang_reserved.pop(j.id, None) is not None:
                    j.gpus = []
            plan = admission.plan_admission(
                [admission.QueuedJob(id=j.id, n=j.n, priority=j.priority, gpus=j.spec.gpus, cpus=j.spec.cpus,
                                     memory_bytes=j.spec.memory_bytes, group=group, group_size=len(queued))
                 for j in queued], self._resources())
            if len(plan.start) != len(queued):
                why = (plan.never or plan.wait)[0].reason if (plan.never or plan.wait) else "they do not fit"
                return False, len(queued), expected, f"node {self.node}: {_short(why, group)}"
            until = time.monotonic() + ttl_s
            by_id = {s.job_id: s.gpus for s in plan.start}
            for j in queued:
                j.gpus = list(by_id[j.id])
                self._gang_reserved[j.id] = until
            return True, len(queued), expected, ""

    def gang_start(self, group: str, actor: str = "") -> list[JobInfo]:
        """Start this node's reserved ranks of ``group``. Raises ProtocolError(CONFLICT) when a
        rank is neither reserved nor fits now (nothing here is started then)."""
        with self._lock:
            members = [j for j in self._members(group) if j.state == "queued" and not j.starting]
            if not members:
                return [self._info(j) for j in self._members(group)]
            lapsed = [j for j in members if j.id not in self._gang_reserved]
            if lapsed:
                ready, _, _, why = self.gang_prepare(group, 5.0)
                if not ready:
                    raise ProtocolError(ErrorCode.CONFLICT, f"group {group}: the reservation on node {self.node} "
                                        f"lapsed and the ranks no longer fit ({why}); the leader retries", "group")
            for j in members:
                gpus = list(j.gpus)
                self._gang_reserved.pop(j.id, None)
                j.reason = ""
                self._action(j, "gang_start", actor, True, f"{j.id}: rank {_rank(j)} of group {group} starts")
                self._start(j, gpus)
        self._flush()
        self._settle()
        return self.group_members(group)

    def gang_release(self, group: str, reason: str) -> None:
        """Drop this node's reservation for ``group``; its queued ranks show ``reason``."""
        with self._lock:
            for j in self._members(group):
                if j.state != "queued" or j.starting:
                    continue
                if self._gang_reserved.pop(j.id, None) is not None:
                    j.gpus = []
                text = f"gang {group}: {reason}" if reason else f"held for gang {group}"
                if text != j.reason:
                    j.reason = text
                    self._pending.append(self._info(j))
        self._flush()

    def _expire_gang_locked(self) -> None:
        """Drop reservations past their deadline (the leader never came back to start them);
        lock held, called every tick."""
        now = time.monotonic()
        for job_id, until in list(self._gang_reserved.items()):
            job = self._jobs.get(job_id)
            if job is None or job.state != "queued" or until <= now:
                del self._gang_reserved[job_id]
                if job is not None and job.state == "queued" and not job.starting:
                    job.gpus = []
                    job.reason = f"held for gang {job.spec.group.id if job.spec.group else '?'}: reservation lapsed"
                    self._pending.append(self._info(job))

    def gang_cancel(self, group: str, reason: str, grace_s: float) -> list[JobInfo]:
        """Cancel this node's unfinished ranks of ``group``; the actor recorded is ``reason``."""
        with self._lock:
            todo = [j.id for j in self._members(group) if j.state not in TERMINAL_STATES and not j.cancelling]
        for job_id in todo:
            with contextlib.suppress(ProtocolError):  # it ended meanwhile
                self.cancel(job_id, grace_s=grace_s, actor=reason)
        return self.group_members(group)



def _rank(job: Job) -> int:
    return job.spec.group.rank if job.spec.group else 0


def _short(reason: str, group: str) -> str:
    """Admission's wording for a whole local unit, without repeating the group's name."""
    return reason.replace(f"member {group} ", "").replace(f"of group {group} ", "")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    statedir.write_private(tmp, data)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
