"""A job runs as its owner: real users (useradd), a real JobManager, real processes.

The state dir of these tests lies in a dir every user can traverse (``public_dir``): under
pytest's 0700 tmp_path a user's job could not reach its checkpoint dir or the report socket,
whatever agentd did.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from agentd.protocol import JobSpec
from agentd.protocol.errors import ProtocolError
from tests.control.control_helpers import finished, wait_for
from tests.users import run_as

pytestmark = pytest.mark.root

MARKER = "FDT_DAEMON_ONLY_MARKER"
JOB_TIMEOUT_S = 60.0
SH = "/bin/sh"


def _run_to_end(m, spec: JobSpec):
    info = m.submit(spec)
    wait_for(finished(m, info.id), JOB_TIMEOUT_S, f"job {info.id} to end")
    return m.get(info.id)


def _stdout(m, job_id: str) -> str:
    data, _, _, _ = m.read_log(job_id, "stdout", 0, 1 << 20)
    return data.decode(errors="replace")


def _stderr(m, job_id: str) -> str:
    data, _, _, _ = m.read_log(job_id, "stderr", 0, 1 << 20)
    return data.decode(errors="replace")


def _vars(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("uid="))


def test_job_runs_as_its_owner_with_their_groups_env_and_home(make_manager, make_user, public_dir, monkeypatch):
    monkeypatch.setenv(MARKER, "agentd-secret")
    u = make_user(group=True)
    m, _ = make_manager(state_dir=public_dir / "state")
    script = ('id; echo "HOME=$HOME"; echo "USER=$USER"; echo "LOGNAME=$LOGNAME"; echo "SHELL=$SHELL"; '
              f'echo "MARK=${{{MARKER}:-absent}}"; echo "PWD=$(pwd)"; echo "SPEC=$FROM_SPEC"; echo "ID=$AGENTD_JOB_ID"')
    info = _run_to_end(m, JobSpec(argv=[SH, "-c", script], user=u.name, env={"FROM_SPEC": "yes"}))
    out = _stdout(m, info.id)
    assert info.state == "succeeded", (info.reason, out, _stderr(m, info.id))
    assert info.owner == u.name
    idline = out.splitlines()[0]
    assert idline.startswith(f"uid={u.uid}({u.name}) gid={u.gid}("), idline
    assert f"{u.groups[0]}" in idline.split("groups=", 1)[1], idline  # the supplementary group
    assert "(root)" not in idline
    v = _vars(out)
    assert v["HOME"] == str(u.home) and v["USER"] == u.name and v["LOGNAME"] == u.name and v["SHELL"] == u.shell
    assert v["MARK"] == "absent"  # agentd's own environment does not reach another user's job
    assert v["PWD"] == str(u.home)  # no cwd in the spec: the owner's home
    assert v["SPEC"] == "yes" and v["ID"] == info.id
    for name in ("stdout.log", "stderr.log"):
        st = os.stat(public_dir / "state" / "jobs" / info.id.rsplit(".", 1)[1] / name)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (u.uid, u.gid, 0o600), name


def test_root_job_keeps_agentd_environment_and_owner_is_root(make_manager, monkeypatch):
    monkeypatch.setenv(MARKER, "agentd-secret")
    m, _ = make_manager()
    info = _run_to_end(m, JobSpec(argv=[SH, "-c", f'id -u; echo "MARK=${MARKER}"']))
    assert info.state == "succeeded"
    assert info.owner == "root"
    out = _stdout(m, info.id)
    assert out.splitlines()[0] == "0" and "MARK=agentd-secret" in out


def test_checkpoint_dir_belongs_to_the_owner_and_job_writes_it(make_manager, make_user, public_dir):
    u = make_user()
    m, _ = make_manager(state_dir=public_dir / "state")
    script = 'echo step=41 > "$AGENTD_CHECKPOINT_DIR/state.txt" && ls -ld "$AGENTD_CHECKPOINT_DIR"'
    info = _run_to_end(m, JobSpec(argv=[SH, "-c", script], user=u.name))
    assert info.state == "succeeded", _stderr(m, info.id)
    ckpt = m.checkpoint_dir(info.id)
    st = os.stat(ckpt)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (u.uid, 0o700)
    written = os.stat(ckpt / "state.txt")
    assert written.st_uid == u.uid
    assert (ckpt / "state.txt").read_text() == "step=41\n"


def test_user_job_reaches_report_socket(make_manager, make_user, public_dir, user_python):
    u = make_user()
    m, _ = make_manager(state_dir=public_dir / "state")
    code = "from agentd import report\nimport time\nreport.metric(owned=7)\ntime.sleep(60)"
    info = m.submit(JobSpec(argv=[str(user_python), "-c", code], user=u.name))

    def got_metric() -> bool:
        m.tick()
        return m.get(info.id).metrics.get("owned") == 7.0 or m.get(info.id).state != "running"

    wait_for(got_metric, JOB_TIMEOUT_S, "the user's job to report a metric")
    assert m.get(info.id).metrics.get("owned") == 7.0, (m.get(info.id).reason, _stderr(m, info.id))


def test_user_job_cannot_read_daemon_files_or_other_jobs(make_manager, make_user, public_dir):
    a, b = make_user(), make_user()
    state = public_dir / "state"
    m, _ = make_manager(state_dir=state)
    other = _run_to_end(m, JobSpec(argv=[SH, "-c", "echo b-private-output"], user=b.name, env={"B_TOKEN": "b-secret"}))
    assert other.state == "succeeded"
    other_dir = state / "jobs" / other.id.rsplit(".", 1)[1]
    probes = {"db": state / "jobs.db", "listing": state, "jobs listing": state / "jobs",
              "launch": other_dir / "launch.json", "other log": other_dir / "stdout.log",
              "other ckpt": m.checkpoint_dir(other.id)}
    script = "; ".join(
        f'if cat "{p}" >/dev/null 2>&1 || ls "{p}" >/dev/null 2>&1 && [ -d "{p}" ]; then echo "READ {k}"; '
        f'else echo "DENIED {k}"; fi' for k, p in probes.items())
    info = _run_to_end(m, JobSpec(argv=[SH, "-c", script], user=a.name))
    out = _stdout(m, info.id)
    assert info.state == "succeeded", _stderr(m, info.id)
    for k in probes:
        assert f"DENIED {k}" in out, out
    # the same from outside agentd, as user a in a login-like process
    r = run_as(a, ["cat", str(other_dir / "stdout.log")])
    assert r.returncode != 0
    r = run_as(b, ["cat", str(other_dir / "stdout.log")])
    assert r.returncode == 0 and "b-private-output" in r.stdout  # its owner reads it by name


def test_jobs_of_two_users_side_by_side(make_manager, make_user, public_dir):
    a, b = make_user(), make_user()
    m, _ = make_manager(state_dir=public_dir / "state")
    sleeper = 'id -u; echo started > "$AGENTD_CHECKPOINT_DIR/started"; sleep 60'
    ja = m.submit(JobSpec(argv=[SH, "-c", sleeper], user=a.name))
    jb = m.submit(JobSpec(argv=[SH, "-c", sleeper], user=b.name))

    def both_started() -> bool:
        m.tick()
        return all((m.checkpoint_dir(j.id) / "started").exists() for j in (ja, jb))

    wait_for(both_started, JOB_TIMEOUT_S, "both users' jobs to start")
    assert {m.get(ja.id).state, m.get(jb.id).state} == {"running"}
    assert (m.get(ja.id).owner, m.get(jb.id).owner) == (a.name, b.name)
    wait_for(lambda: _stdout(m, ja.id).strip() and _stdout(m, jb.id).strip(), JOB_TIMEOUT_S, "their id output")
    assert _stdout(m, ja.id).split()[0] == str(a.uid)
    assert _stdout(m, jb.id).split()[0] == str(b.uid)
    for job, user in ((ja, a), (jb, b)):
        for pid in m.get(job.id).pids:
            with open(f"/proc/{pid}/status") as f:
                uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
            assert set(uids) == {str(user.uid)}, (job.id, pid, uids)
    for j in (ja, jb):
        m.cancel(j.id, grace_s=0.0)


def test_program_the_owner_cannot_run_is_refused_at_submit(make_manager, make_user, public_dir, tmp_path):
    u = make_user()
    m, _ = make_manager(state_dir=public_dir / "state")
    private = tmp_path / "tool.sh"  # under pytest's 0700 tmp dir: root may run it, the user may not
    private.write_text("#!/bin/sh\necho hi\n")
    private.chmod(0o755)
    with pytest.raises(ProtocolError) as e:
        m.submit(JobSpec(argv=[str(private)], user=u.name))
    assert e.value.field == "argv" and u.name in e.value.message and "not executable" in e.value.message
    with pytest.raises(ProtocolError) as e:
        m.submit(JobSpec(argv=[SH, "-c", "true"], user=u.name, cwd=str(tmp_path)))
    assert e.value.field == "cwd" and u.name in e.value.message
    # root's own job may run the same program, as before
    assert _run_to_end(m, JobSpec(argv=[str(private)])).state == "succeeded"
    # and a program the user can run is accepted
    ok = _run_to_end(m, JobSpec(argv=["true"], user=u.name))
    assert ok.state == "succeeded", (ok.reason, _stderr(m, ok.id))


def test_interpreter_under_root_home_is_refused_for_a_user(make_manager, make_user, public_dir):
    if os.stat(Path(sys.executable).resolve().parent).st_mode & stat.S_IXOTH and not str(
            Path(sys.executable).resolve()).startswith("/root/"):
        pytest.skip(f"SKIPPED: {sys.executable} is reachable by everyone here; nothing to refuse")
    u = make_user()
    m, _ = make_manager(state_dir=public_dir / "state")
    with pytest.raises(ProtocolError) as e:
        m.submit(JobSpec(argv=[sys.executable, "-c", "pass"], user=u.name))
    assert e.value.field == "argv" and "not executable by user" in e.value.message


def test_migrated_checkpoint_is_handed_to_the_owner(make_manager, make_user, public_dir):
    """A migration target adopts a checkpoint received as root: the resumed job, running as its
    owner, reads and rewrites it."""
    u = make_user()
    m, _ = make_manager(state_dir=public_dir / "state")
    received = public_dir / "incoming"
    (received / "sub").mkdir(parents=True)
    (received / "sub" / "state.txt").write_text("step=9\n")
    script = ('cat "$AGENTD_CHECKPOINT_DIR/sub/state.txt"; echo "resume=$AGENTD_RESUME"; '
              'echo step=10 > "$AGENTD_CHECKPOINT_DIR/sub/state.txt"; id -u')
    info = m.start_resumed(JobSpec(argv=[SH, "-c", script], user=u.name), received, "elsewhere.3", False)
    wait_for(finished(m, info.id), JOB_TIMEOUT_S, "the resumed job to end")
    done = m.get(info.id)
    out = _stdout(m, info.id)
    assert done.state == "succeeded", (done.reason, _stderr(m, info.id))
    assert out.split() == ["step=9", "resume=1", str(u.uid)]
    assert (m.checkpoint_dir(info.id) / "sub" / "state.txt").read_text() == "step=10\n"
    assert done.owner == u.name
