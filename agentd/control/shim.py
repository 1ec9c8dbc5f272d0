"""The reaper that stands between agentd and a job (stdlib only; run as a script with -I -S).

Why it exists: a job must outlive agentd, and a restarted agentd is not the job's parent, so it
could never learn the exit code. The shim is the parent: it forks the job (own session, placed in
its cgroups BEFORE exec so no child escapes), copies stdout/stderr into size-capped rotating log
files, forwards ``AGENTD_*`` lines to the report socket, and writes ``exit.json`` into the job
dir when the job ends. It is a child subreaper, so orphaned grandchildren are reaped too.

The shim stays root; with ``launch["run_as"]`` ({"name", "uid", "gid"}) the job drops to that
user (supplementary groups from initgroups, then gid, then uid) after entering its cgroups and
before it execs, and its cwd is entered as that user. The logs are written by the shim but owned
by the job's owner (0600); every other file the shim writes into JOB_DIR is root's (0600).

Usage: ``python -I -S shim.py JOB_DIR`` with ``JOB_DIR/launch.json`` written by the manager.
Before it forks, the shim claims the launch: it creates the symlink ``JOB_DIR/claim-<token>``
(``launch_token`` of launch.json) pointing at ``shim:<pid>:<start ticks>``. Creating a symlink is
atomic and needs no data block, so it works on a full disk too. A restarted agentd that finds a
launch journaled but unconfirmed creates the same link (``revoked:...``) first: whoever creates
it decides whether that launch runs, so a job never starts twice.
Writes ``JOB_DIR/pid.json`` ({"shim_pid", "pid", "start_ticks"}) once the job is forked.

A full disk never kills the job: log output that cannot be written is dropped and counted
(``log_dropped_bytes`` in exit.json), and pid.json/exit.json are retried until they land.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import sys
import time
import warnings  # noqa: F401 - os.execvpe imports it lazily; after setuid the stdlib may be unreadable
from typing import Any, BinaryIO

PR_SET_CHILD_SUBREAPER = 36
READ_CHUNK = 65536
DRAIN_AFTER_EXIT_S = 1.0
REPORT_PREFIX = b"AGENTD_"
MAX_LINE = 4096


def _warn(text: str) -> None:
    try:
        os.write(2, (text + "\n").encode())
    except OSError:
        pass  # shim.log is on the same full disk


def _atomic_json(path: str, obj: dict[str, Any]) -> None:
    """Write ``obj`` to ``path`` atomically; daemon-private (0600 root) whatever the umask."""
    tmp = path + ".tmp"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _try_json(path: str, obj: dict[str, Any]) -> bool:
    """``_atomic_json`` that reports failure (a full disk) instead of raising; the caller retries."""
    try:
        _atomic_json(path, obj)
        return True
    except OSError as e:
        _warn(f"agentd shim: cannot write {path} ({e}); retrying")
        return False


def _claim(job_dir: str, token: str) -> bool:
    """Claim launch ``token`` for this shim; False when agentd revoked it (or another shim has it)."""
    me = os.getpid()
    try:
        ticks = _start_ticks(me)
    except OSError:
        ticks = 0
    try:
        os.symlink(f"shim:{me}:{ticks}", os.path.join(job_dir, f"claim-{token}"))
        return True
    except FileExistsError:
        return False


def _start_ticks(pid: int) -> int:
    # agentd.kernel.procfs.read_stat parses this everywhere else; the shim runs as a bare
    # script (-I -S, the agentd package not on its path), so it keeps this one-line read.
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


class RotatingLog:
    """Append to ``path``; past ``max_bytes`` rename it to ``path.1`` (``keep`` files kept).

    The shim (root) writes the file, but it belongs to the job's owner (``owner`` = uid, gid):
    mode 0600, so the owner can read it and nobody else but root. Opened with O_NOFOLLOW: a
    link planted in place of a log never makes root write elsewhere. A write the disk refuses
    (full) is dropped and counted, never raised: the job must not die of its log.
    """

    def __init__(self, path: str, max_bytes: int, keep: int, owner: tuple[int, int] | None = None) -> None:
        self.path, self.max_bytes, self.keep, self.owner = path, max_bytes, keep, owner
        self.dropped_bytes = 0
        self.f: BinaryIO | None = None
        self._reopen()

    def _reopen(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError:
            self.f = None
            return
        os.fchmod(fd, 0o600)
        if self.owner is not None:
            os.fchown(fd, *self.owner)
        self.f = os.fdopen(fd, "ab", buffering=0)

    def write(self, data: bytes) -> None:
        """Append ``data``; on a write error (full disk) drop it and count it, never raise."""
        try:
            if self.f is None:
                self._reopen()
                if self.f is None:
                    raise OSError("log file cannot be opened")
            # Rotate before a write that would pass the cap, so the current file never sits empty.
            if self.f.tell() and self.f.tell() + len(data) > self.max_bytes:
                self.f.close()
                self.f = None
                for i in range(self.keep - 1, 0, -1):
                    src = self.path if i == 1 else f"{self.path}.{i - 1}"
                    if os.path.exists(src):
                        os.replace(src, f"{self.path}.{i}")
                self._reopen()
                if self.f is None:
                    raise OSError("log file cannot be opened")
            done = self.f.write(data) or 0
            if done < len(data):
                self.dropped_bytes += len(data) - done
        except OSError as e:
            if not self.dropped_bytes:
                _warn(f"agentd shim: cannot write {self.path} ({e}); output is dropped and counted")
            self.dropped_bytes += len(data)


class LineForwarder:
    """Finds ``AGENTD_...`` lines in a stream and sends them as datagrams (never blocks)."""

    def __init__(self, job_id: str, report_path: str | None) -> None:
        self.job_id, self.report_path = job_id, report_path
        self.buf = b""
        self.sock = None
        if report_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.setblocking(False)

    def feed(self, data: bytes) -> None:
        if self.sock is None or not self.report_path:
            return
        self.buf += data
        lines = self.buf.split(b"\n")
        self.buf = lines.pop()[-MAX_LINE:]
        for line in lines:
            if line.startswith(REPORT_PREFIX):
                msg = {"job": self.job_id, "t": "line", "line": line[:MAX_LINE].decode("utf-8", "replace"),
                       "wall_s": time.time()}
                try:
                    self.sock.sendto(json.dumps(msg).encode(), self.report_path)
                except OSError:
                    pass  # daemon gone or its queue full: metrics are best effort


def _enter_job(launch: dict[str, Any]) -> None:
    """In a forked child: join the job's cgroups and take back the signal defaults (the shim
    ignores some; what runs next, the job or criu, needs them)."""
    me = str(os.getpid())
    for procs in launch["cgroup_procs"]:
        with open(procs, "w") as f:
            f.write(me)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)


def _child(launch: dict[str, Any], out_w: int, err_w: int) -> None:
    """In the forked child: enter the cgroups, set up the session and exec. Never returns."""
    try:
        os.setsid()
        _enter_job(launch)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        if launch.get("nice"):
            try:
                os.setpriority(os.PRIO_PROCESS, 0, launch["nice"])
            except OSError:
                pass
        if launch.get("autogroup_nice") is not None:
            try:
                with open("/proc/self/autogroup", "w") as f:
                    f.write(str(launch["autogroup_nice"]))
            except OSError:
                pass
        run_as = launch.get("run_as")
        if run_as:
            # Supplementary groups, then gid, then uid: after setuid we could change none of them.
            os.initgroups(run_as["name"], run_as["gid"])
            os.setgid(run_as["gid"])
            os.setuid(run_as["uid"])
            if os.getuid() != run_as["uid"] or os.geteuid() != run_as["uid"]:
                raise PermissionError(f"could not drop to uid {run_as['uid']}")
        os.umask(int(launch.get("umask", 0o022)))  # agentd itself runs with 077
        if launch.get("cwd"):
            os.chdir(launch["cwd"])  # after dropping privileges: the owner must be able to enter it
        argv = launch["argv"]
        if launch.get("shell"):
            argv = ["/bin/sh", "-c", argv[0]]
        os.execvpe(argv[0], argv, launch["env"])
    except BaseException as e:  # noqa: BLE001 - report anything, then exit 127 like a shell
        try:
            os.write(2, f"agentd: cannot start job: {e}\n".encode())
        finally:
            os._exit(127)


def _restore_child(launch: dict[str, Any], out_w: int, err_w: int, pidfile: str) -> None:
    """In the forked child: enter the cgroups and exec ``criu restore`` (the restored tasks are
    created inside them). ``--inherit-fd`` gives the restored job our pipes for the stdout and
    stderr pipes it had on the source. Never returns."""
    try:
        _enter_job(launch)
        restore = launch["criu_restore"]
        argv = [*restore["criu"], "restore", "-D", restore["images"], "-o", "restore.log", "-d",
                "--pidfile", pidfile, "--manage-cgroups=ignore"]
        for fd, key in ((out_w, restore["pipes"].get("1")), (err_w, restore["pipes"].get("2"))):
            if key:
                argv += ["--inherit-fd", f"fd[{fd}]:{key}"]
        os.set_inheritable(out_w, True)
        os.set_inheritable(err_w, True)
        os.execvp(argv[0], argv)
    except BaseException as e:  # noqa: BLE001
        try:
            os.write(2, f"agentd: cannot run criu restore: {e}\n".encode())
        finally:
            os._exit(127)


def _restore(launch: dict[str, Any], job_dir: str, out_w: int, err_w: int, exec_w: int, closing: list[int]) -> int:
    """Restore the job from a CRIU image; its pid (our child: we are its subreaper), or exit."""
    pidfile = os.path.join(job_dir, "restored.pid")
    criu = os.fork()
    if criu == 0:
        for fd in closing:
            os.close(fd)
        _restore_child(launch, out_w, err_w, pidfile)
    os.close(exec_w)
    _, status = os.waitpid(criu, 0)  # ``restore -d`` exits once the tree runs
    if status != 0:
        log = os.path.join(launch["criu_restore"]["images"], "restore.log")
        detail = ""
        if os.path.exists(log):
            with open(log, errors="replace") as f:
                detail = " ".join(line.strip() for line in f.readlines()[-3:])
        os.write(2, f"agentd: criu restore failed (status {status}): {detail}\n".encode())
        sys.exit(1)
    with open(pidfile) as f:
        return int(f.read().strip())


def main(job_dir: str) -> int:
    with open(os.path.join(job_dir, "launch.json")) as f:
        launch = json.load(f)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)  # the shim must outlive signals aimed at the job
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    token = launch.get("launch_token")
    if token and not _claim(job_dir, str(token)):
        _warn(f"agentd shim: launch {token} of job {launch.get('job_id')} was revoked by agentd; not starting it")
        return 3
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    exec_r, exec_w = os.pipe()  # close-on-exec: EOF tells us the job has exec'd (or died trying)
    if launch.get("criu_restore"):
        pid = _restore(launch, job_dir, out_w, err_w, exec_w, [out_r, err_r, exec_r])
    else:
        pid = os.fork()
        if pid == 0:
            os.close(out_r)
            os.close(err_r)
            os.close(exec_r)
            _child(launch, out_w, err_w)
        os.close(exec_w)
    os.close(out_w)
    os.close(err_w)
    while os.read(exec_r, 4096):
        pass
    os.close(exec_r)
    try:
        ticks = _start_ticks(pid)
    except OSError:
        ticks = 0
    pid_info = {"shim_pid": os.getpid(), "pid": pid, "start_ticks": ticks}
    wrote_pid = _try_json(os.path.join(job_dir, "pid.json"), pid_info)

    cap, keep = int(launch.get("log_max_bytes", 10 << 20)), int(launch.get("log_keep", 2))
    run_as = launch.get("run_as")
    owner = (run_as["uid"], run_as["gid"]) if run_as else None
    logs = {out_r: RotatingLog(os.path.join(job_dir, "stdout.log"), cap, keep, owner),
            err_r: RotatingLog(os.path.join(job_dir, "stderr.log"), cap, keep, owner)}
    fwd = {fd: LineForwarder(launch["job_id"], launch.get("report_path")) for fd in logs}
    open_fds = set(logs)
    status: int | None = None
    exited_at = 0.0
    wrote_exit = False
    result: dict[str, Any] = {}
    while True:
        timeout = 0.2
        if not wrote_pid:
            wrote_pid = _try_json(os.path.join(job_dir, "pid.json"), pid_info)
        if open_fds:
            ready, _, _ = select.select(list(open_fds), [], [], timeout)
            for fd in ready:
                try:
                    data = os.read(fd, READ_CHUNK)
                except OSError:
                    data = b""
                if not data:
                    open_fds.discard(fd)
                    os.close(fd)
                    continue
                logs[fd].write(data)
                fwd[fd].feed(data)
        else:
            time.sleep(timeout)
        while True:  # reap the job and any orphan handed to us as subreaper
            try:
                got, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                got, st = -1, 0
            if got <= 0:
                break
            if got == pid:
                status, exited_at = st, time.monotonic()
        if status is not None and not wrote_exit and (not open_fds or time.monotonic() - exited_at > DRAIN_AFTER_EXIT_S):
            if not result:
                result = {"ended_s": time.time()}
                if os.WIFSIGNALED(status):
                    result.update(exit_code=-os.WTERMSIG(status), signal=os.WTERMSIG(status))
                else:
                    result.update(exit_code=os.WEXITSTATUS(status), signal=None)
            result["log_dropped_bytes"] = sum(log.dropped_bytes for log in logs.values())
            # A full disk: stay and retry, so agentd still learns the exit code once space is back.
            wrote_exit = wrote_pid and _try_json(os.path.join(job_dir, "exit.json"), result)
            if not wrote_exit and not os.path.isdir(job_dir):
                return 1  # the job's dir was removed (its state dir deleted): nobody can read it

        if wrote_exit:
            try:
                os.waitpid(-1, os.WNOHANG)
                has_children = True
            except ChildProcessError:
                has_children = False
            if not has_children and not open_fds:
                return 0
            if not has_children and time.monotonic() - exited_at > DRAIN_AFTER_EXIT_S:
                return 0  # a pipe held by a process outside our tree: stop copying


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
