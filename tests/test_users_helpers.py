"""The real-user test helpers themselves work: users exist with their groups, run_as runs as them,
the user venv imports the project, and removal leaves nothing behind."""

from __future__ import annotations

import pwd

import pytest

from tests.users import run_as, user_pids


def test_user_with_group_runs_as_itself(make_user, user_python):
    u = make_user(group=True)
    r = run_as(u, ["id"])
    assert r.returncode == 0, r.stderr
    assert f"uid={u.uid}({u.name})" in r.stdout
    assert f"gid={u.gid}" in r.stdout
    assert u.groups[0] in r.stdout
    r = run_as(u, [str(user_python), "-c", "import agentd, os; print(os.getuid(), agentd.__file__)"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == str(u.uid)


def test_removal_kills_processes_and_deletes_user(make_user):
    import subprocess

    from tests import users

    u = users.create_user()
    p = subprocess.Popen(["sleep", "60"], user=u.uid, group=u.gid)
    try:
        assert p.pid in user_pids(u.uid)
    finally:
        users.remove_user(u)
    assert p.poll() is not None
    with pytest.raises(KeyError):
        pwd.getpwnam(u.name)
    assert not u.home.exists()
