"""Migration truth and job identity, with real agentd processes on loopback (issue 13):
each attempt has its own id, the job's current priority travels, one lineage across hops,
no migration to the job's own node, CRIU never silently leaves processes behind and never
keeps spent images."""

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from agentd.protocol import ErrorCode
from agentd.protocol.messages import Cancel, Jobs, Migrate, Priority, Submit
from agentd.transport.client import RemoteError
from tests.agentd_proc import REPO, free_port

from .conftest import steps, wait_for
from .test_migration_daemons import (  # noqa: F401  (daemons and fast_failures are fixtures)
    N,
    _counter_job,
    _kill_trainers,
    _need_criu,
    _show,
    _spec,
    _submit_and_reach,
    _wait_settled,
    daemons,
    fast_failures,
)

pytestmark = pytest.mark.slow


def agentctl(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "agentd.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


def _migrated(a, job_id, tag):
    info, max_alive = _wait_settled(a, job_id, tag)
    assert info.state == "migrated", (info.state, info.migration)
    assert max_alive == 1
    return info


def test_cli_migrate_after_a_failed_attempt_follows_its_own_attempt(daemons, tmp_path, fast_failures):
    """A first attempt fails (nothing listens at the target); the second, to a real node,
    succeeds: agentctl reports the success (exit 0), not the old failure."""
    a, b = daemons("a"), daemons("b")
    progress = tmp_path / "progress.txt"
    try:
        job = _submit_and_reach(a, progress)
        with a.client(timeout_s=10) as c:
            first = c.call(Migrate(job=job.id, target=f"tcp://127.0.0.1:{free_port()}"))
        info, _ = _wait_settled(a, job.id, str(progress))
        assert info.migration["phase"] == "failed", info.migration
        r = agentctl("--node", a.ctl, "migrate", job.id, "--to", b.ctl)
        assert r.returncode == 0, f"the new attempt succeeded, yet agentctl said: {r.stdout} {r.stderr}"
        info = _show(a, job.id)
        assert info.state == "migrated" and info.migrated_to in r.stdout
        # Each attempt has its own id, named by the migrate reply and in the job's ``migration``.
        assert first.migration_id and info.migration["id"] not in ("", first.migration_id), info.migration
    finally:
        _kill_trainers(str(progress))


def _nice(pid: int) -> int:
    return psutil.Process(pid).nice()


def test_priority_set_after_submit_travels_and_is_applied(daemons, tmp_path):
    a, b = daemons("a"), daemons("b")
    progress = tmp_path / "progress.txt"
    try:
        job = _submit_and_reach(a, progress, labels={"team": "vision"}, memory_bytes=512 * 1024**2)
        with a.client(timeout_s=10) as c:
            c.call(Priority(job=job.id, priority=5))
            c.call(Migrate(job=job.id, target=b.ctl))
        info = _migrated(a, job.id, str(progress))
        new = _show(b, info.migrated_to)
        assert new.priority == 5 and new.spec.priority == 5, (new.priority, new.spec.priority)
        assert new.spec.labels["team"] == "vision" and new.spec.memory_bytes == 512 * 1024**2
        wait_for(lambda: new.pid in [p for _, p in steps(progress)], timeout_s=15, what="the trainer on b")
        assert _nice(new.pid) == -5
    finally:
        _kill_trainers(str(progress))


def test_one_lineage_across_two_hops_and_the_cli_shows_the_live_hop(daemons, tmp_path):
    a, b = daemons("a"), daemons("b")
    progress = tmp_path / "progress.txt"
    try:
        job = _submit_and_reach(a, progress)
        first_submit = _show(a, job.id).submitted_s
        with a.client(timeout_s=10) as c:
            c.call(Migrate(job=job.id, target=b.ctl))
        on_b = _show(b, _migrated(a, job.id, str(progress)).migrated_to)
        assert on_b.lineage == [job.id] and on_b.origin == job.id
        assert on_b.first_submitted_s == first_submit
        wait_for(lambda: len([s for s, p in steps(progress) if p == on_b.pid]) >= 5, timeout_s=20, what="steps on b")
        with b.client(timeout_s=10) as c:
            c.call(Migrate(job=on_b.id, target=a.ctl))
        back = _show(a, _migrated(b, on_b.id, str(progress)).migrated_to)
        assert back.lineage == [job.id, on_b.id] and back.origin == job.id
        assert back.first_submitted_s == first_submit
        assert _show(a, job.id).origin == job.id  # a job never migrated is its own origin

        r = agentctl("--node", a.ctl, "--node", b.ctl, "--json", "jobs")
        assert r.returncode == 0, r.stderr
        assert [j["id"] for j in json.loads(r.stdout)] == [back.id], "the superseded hops are hidden"
        r = agentctl("--node", a.ctl, "--node", b.ctl, "--json", "jobs", "--all")
        assert sorted(j["id"] for j in json.loads(r.stdout)) == sorted([job.id, on_b.id, back.id])
        r = agentctl("--node", a.ctl, "jobs")
        assert back.id in r.stdout and f"{job.id} " not in r.stdout and "hidden" in r.stderr, r.stdout + r.stderr
        r = agentctl("--node", a.ctl, "show", back.id)
        assert f"{job.id} → {on_b.id} → {back.id}" in r.stdout, r.stdout
    finally:
        _kill_trainers(str(progress))


def test_migrate_to_its_own_node_is_refused(daemons, tmp_path):
    a = daemons("a")
    progress = tmp_path / "progress.txt"
    try:
        job = _submit_and_reach(a, progress)
        port = a.ctl.rsplit(":", 1)[1]
        for target in (a.ctl, f"tcp://localhost:{port}"):
            with a.client(timeout_s=10) as c, pytest.raises(RemoteError) as err:
                c.call(Migrate(job=job.id, target=target))
            assert err.value.code == ErrorCode.INVALID and "itself" in err.value.message, err.value.message
        r = agentctl("--node", a.ctl, "migrate", job.id, "--to", a.ctl)
        assert r.returncode == 1 and "already runs on that node" in r.stderr, r.stderr
        r = agentctl("--node", a.ctl, "migrate", job.id, "--to", f"tcp://localhost:{port}")
        assert r.returncode == 1 and "itself" in r.stderr and "Traceback" not in r.stderr, r.stderr
        info = _show(a, job.id)
        assert info.state == "running" and not info.migrated_to, (info.state, info.migration)
    finally:
        _kill_trainers(str(progress))


DAEMONIZE = """
import os, sys, time
marker = sys.argv[1]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        # the daemon: reparented to the job's shim (its subreaper), outside the main tree
        while True:
            open(marker + '.daemon', 'w').write(str(os.getpid()))
            time.sleep(0.05)
    os._exit(0)
os.wait()
n = 0
while True:
    n += 1
    open(marker, 'a').write(f'{n}\\n')
    time.sleep(0.02)
"""


def test_criu_refuses_a_job_whose_daemon_left_its_tree_naming_it(daemons, tmp_path):
    env = _need_criu()
    a, b = daemons("a", env=env), daemons("b", env=env)
    marker = tmp_path / "count.txt"
    from agentd.protocol.jobs import JobSpec

    with a.client(timeout_s=10) as c:
        job = c.call(Submit(spec=JobSpec(argv=[sys.executable, "-c", DAEMONIZE, str(marker)], name="forker"))).job
    try:
        daemon_file = Path(str(marker) + ".daemon")
        wait_for(lambda: daemon_file.exists() and daemon_file.read_text().strip(), timeout_s=20, what="the daemon")
        daemon_pid = int(daemon_file.read_text())
        with a.client(timeout_s=10) as c, pytest.raises(RemoteError) as err:
            c.call(Migrate(job=job.id, target=b.ctl))
        msg = err.value.message
        assert err.value.code == ErrorCode.INVALID and f"{daemon_pid} (python" in msg, msg
        assert "--restart" in msg, msg
        info = _show(a, job.id)
        assert info.state == "running" and psutil.pid_exists(daemon_pid) and daemon_pid in info.pids
        with b.client(timeout_s=10) as c:
            assert not c.call(Jobs()).jobs
    finally:
        with a.client(timeout_s=10) as c:
            c.call(Cancel(job=job.id, grace_s=1), timeout_s=15)


def test_criu_image_is_deleted_on_the_target_once_restored(daemons, tmp_path):
    env = _need_criu()
    a, b = daemons("a", env=env), daemons("b", env=env)
    spec, counts, alive = _counter_job(tmp_path)
    try:
        with a.client(timeout_s=10) as c:
            job = c.call(Submit(spec=spec)).job
            wait_for(lambda: len(counts()) >= N, timeout_s=20, what="counting on a")
            c.call(Priority(job=job.id, priority=4))
            c.call(Migrate(job=job.id, target=b.ctl))
        info, _ = _wait_settled(a, job.id, lambda: len(alive()), timeout_s=60)
        assert info.state == "migrated", (info.state, info.migration)
        new = _show(b, info.migrated_to)
        assert new.state == "running" and new.priority == 4
        assert _nice(new.pid) == -4, "the restored process runs with the job's current priority"
        held = list((b.state_dir / "checkpoints").rglob("*.img"))
        assert not held, f"CRIU images left on the target after the restore: {held[:5]}"
        assert not list((a.state_dir / "migrations").rglob("*.img")), "the source's image is gone too"
    finally:
        for p in alive():
            p.kill()
