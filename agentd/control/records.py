"""Where the local manager keeps its jobs: jobs.db, each job's job.json, the job-number
high-water mark and the state dir lock. See the manager's docstring for the durability rules.

A store that cannot be written (full disk) is logged once, remembered and retried every tick;
a store that cannot be opened gives a degraded manager. :class:`JobRecords` holds that state;
it never decides a job's state.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec

from agentd.control.cgroups import CgroupLayout
from agentd.control.job import Runtime
from agentd.protocol.errors import ErrorCode, ProtocolError
from agentd.protocol.jobs import JobInfo
from agentd.store.jobstore import DB_NAME, JobStore, StoreError, store_error

log = logging.getLogger(__name__)

LOCK_NAME = "jobs.lock"
HIGH_WATER_NAME = "job-ids"  # the highest job number handed out, beside jobs.db
JOB_FILE = "job.json"  # the job's latest record inside its job dir
STORE_RETRY_S = 10.0  # how often a store that could not be opened is tried again

Record = tuple[JobInfo, int, Runtime]


class JobRecords:
    """jobs.db plus the job dirs' job.json files of one state dir."""

    def __init__(self, state_dir: Path, node: str, on_problem: Callable[[str, bool], None]) -> None:
        """``on_problem(message, ok)`` is told when the store stops or starts working again."""
        self.state_dir = state_dir
        self.node = node
        self._on_problem = on_problem
        self.store: JobStore | None = None
        self.down: str | None = None  # why the store cannot be written now
        self.retry_at = 0.0
        self.unsaved: set[str] = set()  # jobs whose latest state is not in jobs.db yet
        self.high_water = 0
        self.problems: list[str] = []  # what went wrong reading the state at start
        self._file_failures: set[str] = set()
        self._lock_fd: int | None = None

    # ---- state dir lock and store ----------------------------------------------------
    def lock_state_dir(self) -> None:
        """One manager per state dir: two would adopt and reap the same jobs."""
        path = self.state_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"state dir {self.state_dir} is in use by another agentd "
                                f"(pid {holder}); stop it or give this one its own --state-dir", "state_dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def open(self) -> bool:
        """Open jobs.db; on failure run without it (degraded) and say why. True when open."""
        try:
            self.store = JobStore(self.state_dir / DB_NAME)
        except StoreError as e:
            self.store = None
            self.down = e.message
            self.retry_at = time.monotonic() + STORE_RETRY_S
            self.problems.append(f"{e.message}; running degraded: existing jobs are controlled, new jobs are refused")
            log.error("%s", self.problems[-1])
            return False
        self.problems.extend(self.store.problems)
        self.down = None
        return True

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        if self.store is not None:
            self.store.close()
            self.store = None

    # ---- loading ---------------------------------------------------------------------
    def job_dirs(self) -> list[tuple[int, Path]]:
        try:
            return sorted((int(d.name), d) for d in (self.state_dir / "jobs").iterdir() if d.name.isdigit())
        except OSError:
            return []

    def load(self) -> list[Record]:
        """Every job from jobs.db and from the job dirs' job.json, the newer record of each."""
        best: dict[int, tuple[JobInfo, int, dict[str, Any], float]] = {}
        if self.store is not None:
            seen = len(self.store.problems)
            for info, n, runtime, updated in self.store.load():
                best[n] = (info, n, runtime, updated)
            self.problems.extend(self.store.problems[seen:])  # rows that could not be read, by id
        recovered: list[int] = []
        for n, job_dir in self.job_dirs():
            path = job_dir / JOB_FILE
            try:
                raw = json.loads(path.read_bytes())
                info = msgspec.convert(raw["info"], type=JobInfo)
                runtime, updated = dict(raw["runtime"]), float(raw["updated_s"])
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError, msgspec.ValidationError) as e:
                if n not in best:
                    self.problems.append(f"job record {path} cannot be read ({e}); job number {n} is not managed")
                    log.error("%s", self.problems[-1])
                continue
            if n not in best or best[n][3] < updated:
                if n not in best or best[n][0].state != info.state:
                    recovered.append(n)
                best[n] = (info, n, runtime, updated)
                self.unsaved.add(info.id)  # write it back to jobs.db
        if recovered:
            msg = (f"job store {self.state_dir / DB_NAME} lacked or had older records of jobs "
                   f"{', '.join(best[n][0].id for n in sorted(recovered))}; recovered them from their job dirs")
            self.problems.append(msg)
            log.warning("%s", msg)
        return [(info, n, Runtime.from_dict(runtime)) for n, (info, _, runtime, _) in sorted(best.items())]

    def recorded_high_water(self, layout: CgroupLayout | None) -> int:
        """The highest job number anything on this node remembers: jobs.db, the job-ids file,
        the job dirs and the job cgroup dirs (any one of them may be lost or restored old)."""
        marks = [self.store.high_water() if self.store is not None else 0]
        with contextlib.suppress(OSError, ValueError):
            marks.append(int((self.state_dir / HIGH_WATER_NAME).read_text().strip() or 0))
        marks += [n for n, _ in self.job_dirs()]
        if layout is not None:
            for base in layout.bases.values():
                with contextlib.suppress(OSError):
                    marks += [int(d.name[4:]) for d in base.iterdir() if d.name.startswith("job-") and d.name[4:].isdigit()]
        return max(marks)

    def need_store(self, started: bool) -> JobStore:
        if self.store is None:
            if started and self.down:
                raise ProtocolError(ErrorCode.UNAVAILABLE, f"node {self.node} runs degraded without its job store: "
                                    f"{self.down}", "spec")
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"job manager of node {self.node} is not started", "")
        return self.store

    def allocate_number(self, started: bool) -> int:
        """The next job number, recorded in the job-ids file (fsync'ed) and jobs.db before it is
        handed out. Raises StoreError (a full disk) or ProtocolError (no store)."""
        store = self.need_store(started)
        n = max(self.high_water, store.high_water()) + 1
        path = self.state_dir / HIGH_WATER_NAME
        tmp = path.with_name(path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, f"{n}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise store_error(path, "record job number", e) from None
        self.high_water = n
        store.set_high_water(n)
        return n

    # ---- writing ---------------------------------------------------------------------
    def save(self, job_dir: Path, info: JobInfo, n: int, runtime: Runtime, required: bool = False) -> None:
        """Write the job's record to its job.json and to jobs.db. A failed write (full disk) is
        logged once, remembered and retried every tick; with ``required`` it raises StoreError."""
        raw = runtime.to_dict()
        self._write_job_file(job_dir, info, n, raw)
        if self.store is None:
            self.unsaved.add(info.id)
            if required:
                raise StoreError(self.down or f"the job store of node {self.node} is not open")
            return
        try:
            self.store.save(info, n, raw)
        except StoreError as e:
            self.unsaved.add(info.id)
            self.failed(e)
            if required:
                raise
            return
        self.unsaved.discard(info.id)

    def _write_job_file(self, job_dir: Path, info: JobInfo, n: int, runtime: dict[str, Any]) -> None:
        """The job's latest record in its own dir: the second copy that outlives a lost jobs.db."""
        path = job_dir / JOB_FILE
        tmp = path.with_name(JOB_FILE + ".tmp")
        try:
            tmp.write_bytes(msgspec.json.encode({"info": info, "n": n, "runtime": runtime, "updated_s": time.time()}))
            os.replace(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            kind = f"errno {e.errno}"
            if kind not in self._file_failures:
                self._file_failures.add(kind)
                log.warning("cannot write %s (%s); the job's record is only in jobs.db until this works", path, e)
            return
        self._file_failures.clear()

    def transition(self, job_id: str, old: str, new: str, actor: str, reason: str) -> None:
        if self.store is None:
            return
        try:
            self.store.transition(job_id, old, new, actor, reason)
        except StoreError as e:
            self.failed(e)  # the job's row (retried) still gets its latest state

    def forget(self, job_ids: list[str]) -> None:
        if self.store is not None:
            self.store.forget(job_ids)

    def failed(self, e: StoreError) -> None:
        """First failure of a run of failures: log it and tell clients."""
        if self.down is None:
            self.down = e.message
            log.error("%s; jobs keep running, their records are retried every tick", e.message)
            self._on_problem(f"{e.message}; jobs keep running, new jobs are refused until it works again", False)

    def retry(self, started: bool, all_ids: Iterable[str],
              record_of: Callable[[str], tuple[JobInfo, int, Runtime] | None]) -> None:
        """Each tick: write the records that failed; reopen a store that could not be opened."""
        if self.store is None:
            if not started or time.monotonic() < self.retry_at:
                return
            self.retry_at = time.monotonic() + STORE_RETRY_S
            try:
                self.store = JobStore(self.state_dir / DB_NAME)
            except StoreError:
                return
            self.problems.extend(self.store.problems)
            self.high_water = max(self.high_water, self.store.high_water())
            self.unsaved.update(all_ids)
        if not self.unsaved:
            if self.down is None:
                return
            try:  # nothing waits to be written: probe with a harmless write
                self.store.set_high_water(self.high_water)
            except StoreError:
                return
        for job_id in sorted(self.unsaved):
            rec = record_of(job_id)
            if rec is None:
                self.unsaved.discard(job_id)
                continue
            try:
                self.store.save(rec[0], rec[1], rec[2].to_dict())
            except StoreError:
                return
            self.unsaved.discard(job_id)
        if self.down is not None:
            log.warning("job store %s writable again", self.store.path)
            self._on_problem(f"job store {self.store.path} is writable again; submits are accepted", True)
            self.down = None
