"""Real unprivileged Unix users for tests, and a Python those users can run.

Everything here is real: ``useradd``/``userdel -r``, ``groupadd``/``groupdel``, processes started
with the user's uid, gid and supplementary groups. Nothing is faked, so the helpers need root;
the fixtures in ``tests/conftest.py`` skip (saying why) when the test process is not root.

- ``create_user()`` / ``remove_user()``: a user named ``fdt<hex>`` with a home dir, optionally in
  a fresh supplementary group; removal kills the user's leftover processes by pid first.
- ``build_user_python(repo)``: a venv on ``/usr/bin/python3`` under ``/opt/fleetdeck-test`` (the
  repo's own venv may sit under ``/root``, which others cannot enter) with the project installed
  editable, so ``python -c 'import agentd'`` works as any user. Reused while the repo path and
  its ``pyproject.toml`` are unchanged.
- ``run_as(user, argv)``: ``subprocess.run`` as that user, with the user's own minimal env.
- ``public_tmp()``: a directory every user can traverse (pytest's ``tmp_path`` is under a 0700
  dir, so a state dir there is unreachable for a user's job whatever agentd does).
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = Path("/usr/bin/python3")
USER_VENV_ROOT = Path("/opt/fleetdeck-test")
USER_PREFIX = "fdt"
KILL_WAIT_S = 5.0


class UserSetupError(RuntimeError):
    """Users or the user-runnable Python cannot be set up here; the message says why."""


@dataclass(frozen=True)
class TestUser:
    """A real Unix user made for a test (``__test__ = False``: not a pytest test class)."""

    __test__ = False

    name: str
    uid: int
    gid: int
    home: Path
    shell: str
    groups: tuple[str, ...] = ()  # supplementary groups created with the user (removed with it)
    gids: tuple[int, ...] = field(default=())  # every gid the user has (primary first)

    def env(self, **extra: str) -> dict[str, str]:
        """A login-like minimal environment for this user."""
        return {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name, "SHELL": self.shell,
                "PATH": "/usr/local/bin:/usr/bin:/bin", **extra}


def _run(argv: list[str]) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise UserSetupError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")


def need_root() -> str | None:
    """Why real users cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "creating real Unix users needs root (useradd/userdel); run the suite as root"
    for tool in ("useradd", "userdel", "groupadd", "groupdel"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (package 'passwd'); cannot create test users"
    return None


def create_user(*, group: bool = False, extra_groups: tuple[str, ...] = ()) -> TestUser:
    """Create ``fdt<hex>`` with a home dir; with ``group=True`` also a fresh supplementary group
    ``fdt<hex>g`` the user is a member of. ``extra_groups`` are existing groups to join too."""
    name = f"{USER_PREFIX}{secrets.token_hex(4)}"
    made_groups: list[str] = []
    if group:
        gname = f"{name}g"
        _run(["groupadd", gname])
        made_groups.append(gname)
    supplementary = [*made_groups, *extra_groups]
    argv = ["useradd", "--create-home", "--shell", "/bin/sh", "--user-group"]
    if supplementary:
        argv += ["--groups", ",".join(supplementary)]
    try:
        _run([*argv, name])
    except BaseException:
        for g in made_groups:
            subprocess.run(["groupdel", g], capture_output=True, timeout=60)
        raise
    pw = pwd.getpwnam(name)
    gids = tuple(os.getgrouplist(name, pw.pw_gid))
    return TestUser(name=name, uid=pw.pw_uid, gid=pw.pw_gid, home=Path(pw.pw_dir), shell=pw.pw_shell,
                    groups=tuple(made_groups), gids=(pw.pw_gid, *(g for g in gids if g != pw.pw_gid)))


def user_pids(uid: int) -> list[int]:
    """Pids of processes whose real or effective uid is ``uid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        real, eff = line.split()[1:3]
                        if uid in (int(real), int(eff)):
                            out.append(int(entry))
                        break
        except (OSError, ValueError):
            continue
    return out


def kill_user_processes(uid: int) -> None:
    """SIGKILL every process of ``uid`` (by pid) and wait until none is left (bounded)."""
    deadline = time.monotonic() + KILL_WAIT_S
    while True:
        pids = user_pids(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # our own children (run_as) would stay zombies, still counted under the uid: reap them
        for pid in pids:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        if time.monotonic() > deadline:
            return  # zombies of someone else's children; userdel may complain, we go on
        time.sleep(0.05)


def remove_user(user: TestUser) -> None:
    """Kill the user's processes, ``userdel -r`` it and delete the groups made with it."""
    kill_user_processes(user.uid)
    subprocess.run(["userdel", "--remove", "--force", user.name], capture_output=True, timeout=60)
    for g in user.groups:
        subprocess.run(["groupdel", g], capture_output=True, timeout=60)
    if user.home.exists() and user.home.name == user.name:
        shutil.rmtree(user.home, ignore_errors=True)


def run_as(user: TestUser, argv: list[str], *, env: dict[str, str] | None = None,
           cwd: str | os.PathLike[str] | None = None, timeout: float = 60.0,
           **kw) -> subprocess.CompletedProcess:
    """Run ``argv`` as ``user``: its uid, primary gid and supplementary groups, its own env
    (``env`` is added to it) and its home as cwd. Output is captured as text unless told."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    extra = [g for g in os.getgrouplist(user.name, user.gid) if g != user.gid]
    return subprocess.run(argv, user=user.uid, group=user.gid, extra_groups=extra,
                          env=user.env(**(env or {})), cwd=str(cwd or user.home), timeout=timeout, **kw)


def readable_by_others(path: Path) -> str | None:
    """Why others cannot reach ``path`` (a dir component without o+x, the dir without o+r), or None."""
    path = path.resolve()
    for part in [*reversed(path.parents), path]:
        mode = part.stat().st_mode
        if not mode & stat.S_IXOTH:
            return f"{part} is not traversable by other users (mode {stat.filemode(mode)})"
    if not path.stat().st_mode & stat.S_IROTH:
        return f"{path} is not readable by other users"
    return None


def _make_reachable(repo: Path) -> str | None:
    """Give o+rx to the repo path's components where missing; None when done, else why not.
    Refuses to open up /root or a home dir: that would expose far more than the repo."""
    why = readable_by_others(repo)
    if why is None:
        return None
    for part in [*reversed(repo.resolve().parents), repo.resolve()]:
        mode = part.stat().st_mode
        if mode & stat.S_IXOTH and (part != repo.resolve() or mode & stat.S_IROTH):
            continue
        if part == Path("/root") or part.parent == Path("/home"):
            return (f"the repo {repo} is inside {part} (mode {stat.filemode(mode)}), which test users "
                    f"cannot enter; check the repo out elsewhere (e.g. /work) to run the user tests")
        os.chmod(part, mode | stat.S_IROTH | stat.S_IXOTH)
    return readable_by_others(repo)


def user_venv_dir(repo: Path = REPO) -> Path:
    """Where the user-runnable venv for ``repo`` lives: keyed by the repo path and pyproject hash,
    so worktrees and changed dependencies never share one."""
    h = hashlib.sha256(str(repo.resolve()).encode() + b"\0" + (repo / "pyproject.toml").read_bytes())
    return USER_VENV_ROOT / f"user-venv-{h.hexdigest()[:16]}"


def build_user_python(repo: Path = REPO) -> Path:
    """A python every local user can run with ``agentd`` importable; built once per repo+pyproject.
    Raises UserSetupError saying why when that cannot be done."""
    if not SYSTEM_PYTHON.exists():
        raise UserSetupError(f"{SYSTEM_PYTHON} is missing; the user venv is built on it")
    why = _make_reachable(repo)
    if why:
        raise UserSetupError(why)
    USER_VENV_ROOT.mkdir(parents=True, exist_ok=True)
    os.chmod(USER_VENV_ROOT, 0o755)
    venv = user_venv_dir(repo)
    python = venv / "bin" / "python"
    stamp = venv / ".fleetdeck-ready"
    import fcntl

    with open(USER_VENV_ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test sessions building the same venv
        if not stamp.exists():
            shutil.rmtree(venv, ignore_errors=True)
            _run([str(SYSTEM_PYTHON), "-m", "venv", str(venv)])
            r = subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", str(repo)],
                               capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                raise UserSetupError(f"pip install -e {repo} into {venv} failed: {r.stderr.strip()[-2000:]}")
            for d, dirs, files in os.walk(venv):
                for n in dirs + files:
                    p = os.path.join(d, n)
                    if not os.path.islink(p):
                        os.chmod(p, os.stat(p).st_mode | stat.S_IROTH | (stat.S_IXOTH if os.path.isdir(p) or os.stat(p).st_mode & stat.S_IXUSR else 0))
            os.chmod(venv, 0o755)
            stamp.write_text(str(repo.resolve()))
    return python


def public_tmp(prefix: str = "fdt-") -> Path:
    """A fresh dir under /tmp that every user can traverse (0711) but not list; the caller
    removes it. Use it for state dirs in tests whose jobs run as test users."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(d, 0o711)
    return d


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
