"""The state dir's modes (docs/security.md, "Files under the state dir"): a loose, older state
dir is tightened when the job manager starts; new files are private from the start."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.control.control_helpers import finished, spec, wait_for

pytestmark = pytest.mark.root


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_existing_loose_state_dir_is_tightened_on_start(make_manager, tmp_path):
    state = tmp_path / "state"
    (state / "keys").mkdir(parents=True)
    (state / "authorized_keys" / "operator").mkdir(parents=True)
    (state / "jobs" / "1").mkdir(parents=True)
    (state / "checkpoints" / "n.1").mkdir(parents=True)
    files = {state / "keys" / "server.key_secret": 0o600, state / "authorized_keys" / "operator" / "a.key": 0o600,
             state / "agentd.log": 0o600, state / "jobs" / "1" / "launch.json": 0o600,
             state / "jobs" / "1" / "stdout.log": 0o600}
    for f in files:
        f.write_text("x")
        f.chmod(0o644)
    outside = tmp_path / "outside"
    outside.write_text("not ours")
    outside.chmod(0o644)
    (state / "audit.log").symlink_to(outside)  # planted: chmod must not reach through it
    for d in (state, state / "keys", state / "authorized_keys", state / "jobs", state / "jobs" / "1",
              state / "checkpoints" / "n.1"):
        d.chmod(0o755)
    _m, _ = make_manager(state_dir=state)
    assert mode(state) == 0o711
    assert mode(state / "keys") == 0o700 and mode(state / "authorized_keys") == 0o700
    assert mode(state / "authorized_keys" / "operator") == 0o700
    assert mode(state / "jobs") == 0o711 and mode(state / "jobs" / "1") == 0o711
    assert mode(state / "checkpoints") == 0o711 and mode(state / "checkpoints" / "n.1") == 0o700
    for f, want in files.items():
        assert mode(f) == want, f
    assert mode(state / "jobs.db") == 0o600 and mode(state / "jobs.lock") == 0o600
    assert mode(outside) == 0o644  # a symlink in the state dir is never followed


def test_new_job_files_are_private(make_manager, tmp_path):
    m, _ = make_manager(state_dir=tmp_path / "state")
    info = m.submit(spec(["/bin/sh", "-c", "echo out; echo err >&2"]))
    wait_for(finished(m, info.id), 30, "the job to end")
    job_dir = tmp_path / "state" / "jobs" / info.id.rsplit(".", 1)[1]
    assert mode(job_dir) == 0o711
    for name in ("launch.json", "pid.json", "exit.json", "shim.log", "stdout.log", "stderr.log"):
        assert mode(job_dir / name) == 0o600, name
    for name in ("jobs.db", "jobs.db-wal", "jobs.db-shm"):
        if (tmp_path / "state" / name).exists():
            assert mode(tmp_path / "state" / name) == 0o600, name
    assert mode(m.checkpoint_dir(info.id)) == 0o700
