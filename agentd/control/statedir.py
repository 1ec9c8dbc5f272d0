"""Who may reach what under agentd's state dir, and the helpers that keep it that way.

agentd runs as root on nodes many people log into, while each job runs as its owner. The state
dir is 0711: anyone may pass through it to a path they know, nobody but root may list it. What a
job needs is reachable by name: the report socket (0666; the kernel tells agentd each sender's
pid, so a job cannot report for another), its checkpoint dir (owned by the job's owner, 0700)
and its logs (owned by the job's owner, 0600, in a root-owned 0711 job dir). Everything else is
root's and 0600/0700: the job store (it holds every job's env), keys, the audit and daemon logs,
launch files. ``docs/security.md`` ("Files under the state dir") has the full table.

``secure_state_dir`` applies the table to an existing dir, so an older, looser state dir is
tightened on start. It never follows symlinks and never changes an owner, only modes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

STATE_DIR_MODE = 0o711
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
TRAVERSE_DIR_MODE = 0o711
REPORT_SOCKET_MODE = 0o666

# Root's alone (relative to the state dir): files 0600, dirs 0700 (and their contents).
PRIVATE_FILES = ("jobs.db", "jobs.db-wal", "jobs.db-shm", "jobs.db-journal", "jobs.lock", "audit.log",
                 "agentd.log", "agentd.log.1", "agentd.log.2")
PRIVATE_DIRS = ("keys", "authorized_keys", "migrations")
# Traversable, not listable: users' jobs pass through them to their own entries.
TRAVERSE_DIRS = ("jobs", "checkpoints")
# In each job dir: root's files, and the owner's logs.
JOB_PRIVATE_FILES = ("launch.json", "pid.json", "exit.json", "shim.log", "restored.pid", "pid.json.tmp",
                     "exit.json.tmp")
JOB_LOG_PREFIXES = ("stdout.log", "stderr.log")


def _chmod(path: Path, mode: int) -> None:
    """chmod without following a symlink (a link planted in the state dir is left alone)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) or stat.S_IMODE(st.st_mode) == mode:
        return
    try:
        os.chmod(path, mode)
    except OSError as e:
        log.warning("cannot set mode %o on %s: %s", mode, path, e.strerror)


def _private_tree(root: Path) -> None:
    """root 0700; inside it, dirs 0700 and files at most 0600 (keys' public halves too: the
    node's public key is handed out by the operator, not read from here)."""
    if not root.is_dir() or root.is_symlink():
        return
    _chmod(root, PRIVATE_DIR_MODE)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            _chmod(Path(dirpath, d), PRIVATE_DIR_MODE)
        for f in filenames:
            _chmod(Path(dirpath, f), PRIVATE_FILE_MODE)


def make_traversable_dir(path: Path) -> None:
    """mkdir ``path`` (and parents) and set it 0711 whatever the umask."""
    path.mkdir(parents=True, exist_ok=True)
    _chmod(path, TRAVERSE_DIR_MODE)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` as a root-only 0600 file (never through a symlink)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        os.write(fd, data)
    finally:
        os.close(fd)


def hand_over_tree(root: Path, uid: int, gid: int) -> None:
    """Give a tree agentd wrote (a received checkpoint) to a job's owner. Only call it before
    any process of that user can reach ``root``: the walk trusts that no path in it changes."""
    os.chown(root, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def secure_state_dir(state_dir: Path) -> None:
    """Apply the modes of the table above to ``state_dir`` as it is now (idempotent)."""
    _chmod(state_dir, STATE_DIR_MODE)
    for name in PRIVATE_FILES:
        _chmod(state_dir / name, PRIVATE_FILE_MODE)
    for name in PRIVATE_DIRS:
        _private_tree(state_dir / name)
    for name in TRAVERSE_DIRS:
        _chmod(state_dir / name, TRAVERSE_DIR_MODE)
    jobs = state_dir / "jobs"
    if jobs.is_dir() and not jobs.is_symlink():
        for job_dir in jobs.iterdir():
            if not job_dir.is_dir() or job_dir.is_symlink():
                continue
            _chmod(job_dir, TRAVERSE_DIR_MODE)
            for entry in job_dir.iterdir():
                if entry.name in JOB_PRIVATE_FILES or entry.name.startswith(JOB_LOG_PREFIXES):
                    _chmod(entry, PRIVATE_FILE_MODE)
    ckpts = state_dir / "checkpoints"
    if ckpts.is_dir() and not ckpts.is_symlink():
        for entry in ckpts.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                _chmod(entry, PRIVATE_DIR_MODE)


def unreachable_by_others(path: Path) -> Path | None:
    """The first directory above ``path`` that other users cannot pass through, or None.
    Jobs of other users need to pass to reach their checkpoint dir and the report socket."""
    with contextlib.suppress(OSError):
        for parent in reversed(path.resolve().parents):
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return parent
    return None
