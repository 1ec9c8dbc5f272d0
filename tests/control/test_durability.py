"""Job state survives faults: a lost or old jobs.db, a damaged store, a renamed or shrunken node.
Each test runs a real agentd, kills or stops it, damages its state and starts it again."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from agentd.control import procs
from agentd.protocol import Snapshot
from agentd.protocol.messages import Cancel, Pause, Resume, Show
from agentd.transport.client import RemoteError
from tests.control.control_helpers import SLEEPER
from tests.control.durability_helpers import daemon, jobs, running, submit, wait_until

SHORT = ["/bin/sh", "-c", "exit 0"]


def _drop_db(state: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        p = state / f"jobs.db{suffix}"
        if p.exists():
            p.unlink()


def _number(job_id: str) -> int:
    return int(job_id.rsplit(".", 1)[1])


def test_job_numbers_never_reused_when_jobsdb_is_lost_or_restored_old(tmp_path):
    state = tmp_path / "state"
    backup = tmp_path / "jobs.db.backup"
    stray: subprocess.Popen | None = None
    with running(daemon(state)) as d:
        a = submit(d, SLEEPER, name="a")
        b = submit(d, SHORT, name="b")
        wait_until(lambda: jobs(d)[b.id].state == "succeeded", 15, "job b to succeed")
        d.stop(cancel_jobs=False)  # a keeps running; a clean close leaves everything in jobs.db
        shutil.copy(state / "jobs.db", backup)

        d.start()
        c = submit(d, SLEEPER, name="c")
        assert _number(c.id) > _number(b.id)
        d.kill9()

        # 1. an older jobs.db is restored while a and c run: c is not in it
        _drop_db(state)
        shutil.copy(backup, state / "jobs.db")
        d.start()
        listed = jobs(d)
        assert listed[c.id].state == "running" and listed[c.id].pid == c.pid, "job c was lost with the old jobs.db"
        assert listed[a.id].state == "running"
        e = submit(d, SLEEPER, name="e")
        assert _number(e.id) > _number(c.id), f"{e.id} reuses a number at or below {c.id}"
        assert e.pid != c.pid and set(listed[c.id].pids).isdisjoint(jobs(d)[e.id].pids)
        d.kill9()

        # 2. jobs.db and the job-ids file are lost; a stray process sits in a cgroup dir
        #    numbered above every job (left by some earlier job): it is never adopted
        _drop_db(state)
        (state / "job-ids").unlink()
        cg = Path(listed[a.id].cgroup) if listed[a.id].cgroup else None
        stale_n = _number(e.id) + 5
        if cg is not None:
            stale_dir = cg.parent / f"job-{stale_n}"
            stale_dir.mkdir()
            stray = subprocess.Popen(SLEEPER)
            (stale_dir / "cgroup.procs").write_text(str(stray.pid))
        d.start()
        listed = jobs(d)
        assert {listed[i].state for i in (a.id, c.id, e.id)} == {"running"}, "running jobs were lost with jobs.db"
        f = submit(d, SLEEPER, name="f")
        assert _number(f.id) > _number(e.id)
        if cg is not None:
            assert _number(f.id) > stale_n, "a new job took the number of a cgroup dir that still exists"
            assert stray.pid not in jobs(d)[f.id].pids
        # every job is still under control: pause/resume one recovered from its job dir, cancel all
        with d.client(timeout_s=15) as cl:
            assert cl.call(Pause(job=c.id)).job.state == "paused"
            assert cl.call(Resume(job=c.id)).job.state == "running"
            for j in (a, c, e, f):
                assert cl.call(Cancel(job=j.id, grace_s=0.5)).job.state == "cancelled"
        assert not any(procs.is_alive(j.pid) for j in (a, c, e))
        if stray is not None:
            stray.kill()
            stray.wait(5)
            stale_dir.rmdir()


def _corrupt_not_sqlite(state: Path, job_id: str) -> str:
    (state / "jobs.db").write_bytes(b"this is not a database\n" * 400)
    return "corrupt"


def _corrupt_truncated(state: Path, job_id: str) -> str:
    size = (state / "jobs.db").stat().st_size
    with open(state / "jobs.db", "r+b") as f:
        f.truncate(size // 2)
    return "corrupt"


def _corrupt_row(state: Path, job_id: str) -> str:
    # By the job's real id: job numbers continue past those of earlier daemons named n1 whose
    # job-N cgroup dirs are still there (ids are never reused), so it need not be n1.2.
    db = sqlite3.connect(state / "jobs.db")
    with db:
        assert db.execute("UPDATE jobs SET info = '{garbage' WHERE id = ?", (job_id,)).rowcount == 1
    db.close()
    return "row"


def _newer_schema(state: Path, job_id: str) -> str:
    db = sqlite3.connect(state / "jobs.db")
    db.execute("PRAGMA user_version = 99")  # the state database's schema marker (agentd/store/schema.py)
    db.close()
    return "schema-99"


@pytest.mark.parametrize("damage", [_corrupt_not_sqlite, _corrupt_truncated, _corrupt_row, _newer_schema],
                         ids=["not-sqlite", "truncated", "garbage-row", "newer-schema"])
def test_damaged_store_starts_names_the_problem_and_keeps_jobs(tmp_path, damage):
    state = tmp_path / "state"
    with running(daemon(state)) as d:
        a = submit(d, SLEEPER, name="a")
        b = submit(d, SLEEPER, name="b")
        for i in range(3):  # make the file a few pages long, so that truncating it loses some
            submit(d, SHORT, name=f"filler-{i}", labels={f"pad{k}": "x" * 1000 for k in range(3)})
        d.stop(cancel_jobs=False)
        kind = damage(state, b.id)
        d.start()

        with d.client(timeout_s=10) as c:
            hello = c.hello()
            assert hello.problems, "hello does not say what is wrong with the store"
            text = " ".join(hello.problems)
            assert str(state / "jobs.db") in text
            if kind == "row":
                assert b.id in text, text
            snap = wait_until(lambda: (s := c.call(Snapshot(history=5))).samples and s, 15, "telemetry samples")
            assert any(e.kind == "store" and not e.ok for e in snap.events)
        if kind != "row":
            aside = list(state.glob(f"jobs.db.{kind}-*"))
            assert aside and not any(p.name.endswith(("-wal", "-shm")) for p in aside[:1]), \
                f"the damaged file was not moved aside: {sorted(os.listdir(state))}"
        listed = jobs(d)
        assert listed[a.id].state == "running" and listed[b.id].state == "running"
        with d.client(timeout_s=15) as c:
            assert c.call(Pause(job=b.id)).job.state == "paused"
            assert c.call(Cancel(job=b.id, grace_s=0.5)).job.state == "cancelled"
        new = submit(d, SLEEPER, name="after")
        assert _number(new.id) > _number(b.id) + 3
        # the rewritten store is whole again: a restart needs no recovery
        d.stop(cancel_jobs=False)
        d.start()
        with d.client(timeout_s=10) as c:
            assert c.hello().problems == []
        assert jobs(d)[a.id].state == "running" and jobs(d)[new.id].state == "running"


def test_restart_with_another_name_and_fewer_gpus(tmp_path):
    state = tmp_path / "state"
    first = daemon(state, node="old", gpus=2)
    with running(first):
        a = submit(first, SLEEPER, name="a", gpus=1)
        q = submit(first, SLEEPER, name="q", gpus=2)
        assert q.state == "queued"
        first.stop(cancel_jobs=False)
    with running(daemon(state, node="new", gpus=1)) as d:
        listed = jobs(d)
        assert listed[a.id].state == "running" and a.id.startswith("old.")
        assert listed[q.id].state == "failed"
        assert "asks for 2 GPUs but node new now has 1" in listed[q.id].reason
        with d.client(timeout_s=15) as c:
            assert c.call(Show(job=a.id)).job.id == a.id
            assert c.call(Pause(job=str(_number(a.id)))).job.state == "paused"  # bare number works too
            assert c.call(Resume(job=a.id)).job.state == "running"
            with pytest.raises(RemoteError):
                c.call(Show(job="old.999"))
        n = submit(d, SLEEPER, name="n")
        assert n.id.startswith("new.") and _number(n.id) > _number(q.id)
        with d.client(timeout_s=15) as c:
            assert c.call(Cancel(job=a.id, grace_s=0.5)).job.state == "cancelled"
