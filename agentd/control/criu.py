"""CRIU: whether this node can checkpoint and restore processes, and the dump itself.

A job without a checkpoint contract can still move when ``criu check`` passes on both nodes:
its process tree is dumped to an image directory (the tree is killed once dumped), the image
travels like a checkpoint, and the shim of the new job runs ``criu restore`` (shim.py). The
job's stdout/stderr are pipes to its shim; their ids are recorded at dump time so the restore
can hand the new shim's pipes in their place (``--inherit-fd``).

Debian 12's criu 3.17 fails ``criu check`` on recent kernels (vDSO layout); 4.1 works. The
executable is ``$AGENTD_CRIU`` (a path, for a criu installed outside PATH) or ``criu`` on PATH.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentd.kernel.procfs import fd_target

CRIU_ENV = "AGENTD_CRIU"
PIPES_FILE = "agentd-pipes.json"  # in the image directory: {"1": "pipe:[N]", "2": "pipe:[M]"}
DUMP_TIMEOUT_S = 120.0


class CriuError(Exception):
    """A dump failed; ``message`` carries criu's own last words."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def criu_command() -> list[str] | None:
    """The argv prefix that runs criu here, or None when there is none."""
    configured = os.environ.get(CRIU_ENV, "").strip()
    if configured:
        return shlex.split(configured)
    exe = shutil.which("criu")
    return [exe] if exe else None


def criu_status(cmd: list[str] | None = None,
                run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> tuple[bool, str]:
    """Whether ``criu check`` passes here (with ``cmd``, default :func:`criu_command`), and a
    sentence saying why not."""
    cmd = cmd or criu_command()
    if cmd is None:
        return False, "CRIU is not installed on this node"
    try:
        res = run([*cmd, "check"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"`criu check` could not run: {exc}"
    if res.returncode != 0:
        detail = (res.stderr or res.stdout).strip().splitlines()
        return False, f"`criu check` fails on this kernel: {detail[-1] if detail else 'exit ' + str(res.returncode)}"
    return True, "criu check passed"


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return " ".join(line.strip() for line in text[-lines:])


def dump(pid: int, images_dir: Path) -> None:
    """Dump the process tree rooted at ``pid`` into ``images_dir`` (created); the tree is
    killed once the image is complete. On failure the tree keeps running and CriuError says
    why (from criu's log)."""
    cmd = criu_command()
    if cmd is None:
        raise CriuError("CRIU is not installed on this node")
    images_dir.mkdir(parents=True, exist_ok=True)
    pipes = {}
    for fd in ("1", "2"):
        target = fd_target(pid, fd)
        if target is not None and target.startswith("pipe:"):
            pipes[fd] = target
    (images_dir / PIPES_FILE).write_text(json.dumps(pipes))
    try:
        res = subprocess.run([*cmd, "dump", "-t", str(pid), "-D", str(images_dir), "-o", "dump.log",
                              "--manage-cgroups=ignore", "--file-locks"],
                             capture_output=True, text=True, timeout=DUMP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CriuError(f"criu dump could not run: {exc}") from None
    if res.returncode != 0:
        raise CriuError(f"criu dump of pid {pid} failed: {_log_tail(images_dir / 'dump.log')}")


def restore_launch(images_dir: Path) -> dict[str, Any]:
    """What the shim needs to restore the image in ``images_dir`` (see shim.py)."""
    cmd = criu_command()
    if cmd is None:
        raise CriuError("CRIU is not installed on this node")
    pipes_file = Path(images_dir) / PIPES_FILE
    pipes = json.loads(pipes_file.read_text()) if pipes_file.exists() else {}
    return {"criu": cmd, "images": str(images_dir), "pipes": pipes}
