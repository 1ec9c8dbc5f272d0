"""User commands: pause, resume, priority, cancel, migrate, logs. Each is an asynchronous
request through the DataSource; results and failures land in the event log and the status
bar, and anything still waiting after a second shows progress.

A whole group selected (every live rank of it) is acted on as the CLI does: one ``group_action``
per node, sent at once, and the event log gets the measured skew (for a pause: how far apart the
kernel reported the ranks frozen). Through a relay, which forwards single-job verbs only, and for
part of a group, each rank gets its own request."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QMessageBox, QWidget

from agentd.protocol.errors import ErrorCode
from agentd.protocol.gang import GroupAction, GroupActionName, GroupActionReply
from agentd.protocol.jobs import PRIORITY_MAX, PRIORITY_MIN
from agentd.protocol.messages import Cancel, JobReply, Migrate, Pause, Priority, Request, Resume
from gui.groups import live_ranks
from gui.sources.base import DataSource, RequestFailure
from gui.state import ClusterState

PROGRESS_AFTER_S = 1.0


@dataclass
class _Pending:
    what: str  # "pausing job 'train' (n1.3)"
    started: float
    target_key: str = ""  # a migration's target node (for the restart question)
    batch: _GroupBatch | None = None  # a group action: the other nodes' requests of it


@dataclass
class _GroupBatch:
    """One group action over its nodes: what came back so far."""

    group: str
    action: str
    left: int
    done_wall_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def readable(message: str) -> str:
    """A daemon's error as one readable sentence: its first line (raw tool output such as
    CRIU's log follows on later lines), without the CLI-only remedy, ending in a full stop."""
    first = (message or "").strip().splitlines()[0].strip() if (message or "").strip() else "no reason given"
    for cli in ("; add a checkpoint contract", ". Add a checkpoint contract", ": add a checkpoint contract",
                " — add a checkpoint contract"):
        i = first.find(cli)
        if i > 0 and "--restart" in first[i:]:
            first = first[:i]
    if len(first) > 300:
        first = first[:297].rstrip() + "…"
    return first if first.endswith((".", "…", "?", "!")) else first + "."


def ask_user(parent: QWidget | None, title: str, text: str, detail: str = "") -> bool:
    box = QMessageBox(QMessageBox.Icon.Question, title, text, QMessageBox.StandardButton.Ok | QMessageBox.StandardButton.Cancel, parent)
    box.setInformativeText(detail)
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    return box.exec() == QMessageBox.StandardButton.Ok


class Actions(QObject):
    """Sends control requests and reports their outcome. ``confirm(title, text, detail)`` is
    injectable so tests can answer dialogs."""

    busy_changed = Signal(str)  # text for the progress indicator; "" when idle
    failed = Signal(str)  # a readable message for the status bar / a message box
    succeeded = Signal(str)

    def __init__(self, source: DataSource, state: ClusterState, parent_widget: QWidget | None = None,
                 confirm: Callable[[str, str, str], bool] | None = None, clock=time.monotonic) -> None:
        super().__init__(parent_widget)
        self.source = source
        self.state = state
        self.parent_widget = parent_widget
        self.confirm = confirm or (lambda title, text, detail: ask_user(self.parent_widget, title, text, detail))
        self.clock = clock
        self.pending: dict[int, _Pending] = {}
        self._busy_text = ""
        source.request_done.connect(self._on_done)
        source.request_failed.connect(self._on_failed)

    # ---- helpers ----
    def can_control(self) -> bool:
        return self.source.capabilities().can_control

    def _describe(self, job_id: str) -> str:
        j = self.state.job(job_id)
        return f"job '{j.name}' ({job_id})" if j is not None and j.name else f"job {job_id}"

    def _send(self, job_id: str, req: Request, what: str) -> int | None:
        key = self.state.node_of_job(job_id)
        if key is None:
            self._report_failure(f"{what} failed: {self._describe(job_id)} is not known on any connected node; it may have finished")
            return None
        if not self.can_control():
            self._report_failure(f"{what} is not possible here: this view ({self.source.capabilities().label}) is read-only")
            return None
        token = self.source.request(key, req)
        self.pending[token] = _Pending(what, self.clock())
        return token

    def _whole_groups(self, job_ids: list[str]) -> tuple[dict[str, dict[str, list[str]]], list[str]]:
        """The groups all of whose live ranks are in ``job_ids`` and reached directly (group id
        -> node key -> its ranks there), and the job ids left to act on one by one."""
        relay_of = self.source.relay_of
        chosen = set(job_ids)
        groups: dict[str, dict[str, list[str]]] = {}
        for j in job_ids:
            info = self.state.job(j)
            gid = info.spec.group.id if info is not None and info.spec.group is not None else ""
            if not gid or gid in groups:
                continue
            ranks = live_ranks(self.state.nodes, gid)
            if len(ranks) > 1 and {job.id for _, job, _ in ranks} <= chosen and all(relay_of(k) is None for k, _, _ in ranks):
                by_node: dict[str, list[str]] = {}
                for key, job, _ in ranks:
                    by_node.setdefault(key, []).append(job.id)
                groups[gid] = by_node
        grouped = {j for by_node in groups.values() for ids in by_node.values() for j in ids}
        return groups, [j for j in job_ids if j not in grouped]

    def _act(self, job_ids: list[str], action: GroupActionName, one: Callable[[str], Request], what: str,
             priority: int = 0) -> list[int]:
        """``action`` on whole groups (one group_action per node) and ``one(job)`` on the rest."""
        groups, rest = self._whole_groups(job_ids)
        tokens = []
        for gid, by_node in groups.items():
            if not self.can_control():
                rest += [j for ids in by_node.values() for j in ids]  # reported as read-only below
                continue
            batch = _GroupBatch(gid, action, left=len(by_node))
            for key in by_node:
                token = self.source.request(key, GroupAction(group=gid, action=action, priority=priority))
                self.pending[token] = _Pending(f"{what} group {gid} on {key}", self.clock(), batch=batch)
                tokens.append(token)
        return tokens + [t for j in rest if (t := self._send(j, one(j), f"{what} {self._describe(j)}")) is not None]

    # ---- commands ----
    def pause(self, job_ids: list[str]) -> list[int]:
        return self._act(job_ids, "pause", lambda j: Pause(job=j), "pausing")

    def resume(self, job_ids: list[str]) -> list[int]:
        return self._act(job_ids, "resume", lambda j: Resume(job=j), "resuming")

    def set_priority(self, job_ids: list[str], priority: int) -> list[int]:
        if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            self._report_failure(f"priority {priority} is out of range; use {PRIORITY_MIN}..{PRIORITY_MAX}")
            return []
        return self._act(job_ids, "priority", lambda j: Priority(job=j, priority=priority),
                         f"setting priority {priority:+d} on", priority=priority)

    def cancel(self, job_ids: list[str], ask: bool = True) -> list[int]:
        if not job_ids:
            return []
        names = ", ".join(self._describe(j) for j in job_ids[:5]) + (f" and {len(job_ids) - 5} more" if len(job_ids) > 5 else "")
        if ask and not self.confirm("Cancel jobs" if len(job_ids) > 1 else "Cancel job", f"Cancel {names}?",
                                    "The job gets SIGTERM, then SIGKILL after 10 s. Paused jobs are killed, then thawed. "
                                    "This cannot be undone."):
            return []
        return self._act(job_ids, "cancel", lambda j: Cancel(job=j), "cancelling")

    def migrate(self, job_id: str, target_key: str, ask: bool = True) -> int | None:
        source_key = self.state.node_of_job(job_id)
        addr = self.source.address(target_key)
        if addr is None:
            self._report_failure(f"cannot migrate {self._describe(job_id)} to {target_key!r}: the app has no address for that node")
            return None
        job = self.state.job(job_id)
        paused = job is not None and job.state == "paused"
        has_ckpt = job is not None and job.spec.checkpoint is not None
        what = (f"{self._describe(job_id)} will be asked to checkpoint on {source_key}, the checkpoint copied to "
                f"{target_key} and the job resumed there from it." if has_ckpt else
                f"{self._describe(job_id)} has no checkpoint contract: agentd moves it with CRIU where that works; otherwise it refuses.")
        what += " The source keeps the checkpoint until the target reports the job running; if the target fails, the job restarts on the source."
        if paused:
            what += " The job is paused now and will arrive paused."
        if ask and not self.confirm("Migrate job", f"Migrate {self._describe(job_id)} from {source_key} to {target_key}?", what):
            return None
        return self._send_migrate(job_id, target_key, restart=False)

    def _send_migrate(self, job_id: str, target_key: str, restart: bool) -> int | None:
        addr = self.source.address(target_key)
        if addr is None:
            self._report_failure(f"cannot migrate {self._describe(job_id)} to {target_key!r}: the app has no address for that node")
            return None
        how = " (restart from scratch)" if restart else ""
        token = self._send(job_id, Migrate(job=job_id, target=addr.endpoint, target_key=addr.server_key or "", restart=restart),
                           f"migrating {self._describe(job_id)} to {target_key}{how}")
        if token is not None:
            self.pending[token].target_key = target_key
        return token

    def _offer_restart(self, p: _Pending, failure: RequestFailure) -> bool:
        """A job without a checkpoint contract that could not be moved as it runs (no CRIU on
        either side, GPUs, the daemon refused): offer what the CLI's --restart does. True when
        the user chose it and the request went out again."""
        req = failure.request
        if not isinstance(req, Migrate) or req.restart or not p.target_key or failure.code != ErrorCode.INVALID:
            return False
        job = self.state.job(req.job)
        if job is None or job.spec.checkpoint is not None:
            return False
        if not self.confirm("Migrate job", f"Restart from scratch on {p.target_key}?",
                            f"{self._describe(req.job)} cannot be moved as it runs: {readable(failure.message)} "
                            f"Restarting cancels it on {self.state.node_of_job(req.job)} and starts it anew on "
                            f"{p.target_key}; its progress so far is lost."):
            return False
        return self._send_migrate(req.job, p.target_key, restart=True) is not None

    # ---- outcomes ----
    def _on_done(self, token: int, key: str, reply) -> None:
        p = self.pending.pop(token, None)
        if p is None:
            return
        if p.batch is not None and isinstance(reply, GroupActionReply):
            if key in self.state.nodes:
                for job in reply.jobs:
                    self.state.apply_job(key, job)
            self._batch_part(p.batch, reply.done_wall_s, [reply.message] if reply.message else [])
            self.tick()
            return
        msg = p.what[0].upper() + p.what[1:] + ": done"
        if isinstance(reply, JobReply):
            msg = f"{p.what[0].upper() + p.what[1:]}: now {reply.job.state}" + (f" — {reply.message}" if reply.message else "")
            if key in self.state.nodes:
                self.state.apply_job(key, reply.job)
        job_id = reply.job.id if isinstance(reply, JobReply) else ""
        self.state.add_local_event(msg, node=key, job_id=job_id)
        self.succeeded.emit(msg)
        self.tick()

    def _on_failed(self, token: int, failure: RequestFailure) -> None:
        p = self.pending.pop(token, None)
        if p is None:
            return
        if p.batch is not None:
            self._batch_part(p.batch, {}, [f"node {failure.node}: {readable(failure.message)}"])
            self.tick()
            return
        if self._offer_restart(p, failure):
            self.tick()
            return
        self._report_failure(f"{p.what[0].upper() + p.what[1:]} failed: {readable(failure.message)}", node=failure.node,
                             job_id=getattr(failure.request, "job", ""))
        self.tick()

    def _batch_part(self, batch: _GroupBatch, done: dict[str, float], notes: list[str]) -> None:
        """One node's answer to a group action; the last one reports the whole group."""
        batch.left -= 1
        batch.done_wall_s.update(done)
        batch.notes += notes
        if batch.left > 0:
            return
        verb = {"pause": "paused", "resume": "resumed", "priority": "reprioritised", "cancel": "cancelling"}[batch.action]
        n = len(batch.done_wall_s)
        msg = f"Group {batch.group}: {n} rank{'s' if n != 1 else ''} {verb}"
        if batch.action == "pause" and n > 1:
            skew_ms = (max(batch.done_wall_s.values()) - min(batch.done_wall_s.values())) * 1000
            msg += f", frozen within {skew_ms:.0f} ms of each other"
        if batch.notes:
            self._report_failure(msg + " — " + "; ".join(readable(x) for x in batch.notes))
        else:
            self.state.add_local_event(msg)
            self.succeeded.emit(msg)

    def _report_failure(self, message: str, node: str = "", job_id: str = "") -> None:
        self.state.add_local_event(message, node=node, job_id=job_id, ok=False, kind="error")
        self.failed.emit(message)

    def tick(self) -> None:
        """Update the progress text (called by the window's timer)."""
        now = self.clock()
        slow = [p for p in self.pending.values() if now - p.started >= PROGRESS_AFTER_S]
        text = ""
        if slow:
            oldest = min(slow, key=lambda p: p.started)
            text = oldest.what[0].upper() + oldest.what[1:] + f"… {now - oldest.started:.0f} s"
            if len(slow) > 1:
                text += f" (+{len(slow) - 1} more)"
        if text != self._busy_text:
            self._busy_text = text
            self.busy_changed.emit(text)
