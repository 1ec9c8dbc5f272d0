"""``make run``: a local agentd and the app connected to it, on this machine.

Uses an agentd already answering on the default endpoint (``--port``, default 7710), or starts
one for the session (and stops it, by pid, on exit). When another program holds the default
ports, the session's agentd takes free ones and says which. Without a display, says so in one
line and shows the live text view (``agentctl top``) instead of the app.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from agentd.config import DEFAULT_CTL
from agentd.transport.client import NodeClient, Unreachable
from agentd.transport.ports import free_listen_port

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = int(DEFAULT_CTL.rsplit(":", 1)[1])
START_TIMEOUT_S = 20.0


def _answers(endpoint: str, timeout_s: float = 0.5) -> bool:
    with NodeClient(endpoint, timeout_s=timeout_s) as c:
        try:
            c.hello()
            return True
        except Unreachable:
            return False


def _port_free(port: int) -> bool:
    """Whether a TCP listener could bind ``port`` on loopback now."""
    with socket.socket() as s:
        try:
            s.bind((LOOPBACK, port))
            return True
        except OSError:
            return False


def _free_port() -> int:
    return free_listen_port(LOOPBACK)


def pick_ports(port: int) -> tuple[int, int, bool]:
    """(request port, stream port, whether these are the asked ones): ``port`` and ``port+1``
    when both are free, else two free ports the kernel hands out."""
    if _port_free(port) and _port_free(port + 1):
        return port, port + 1, True
    ctl = _free_port()
    pub = _free_port()
    while pub == ctl:
        pub = _free_port()
    return ctl, pub, False


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agentd.runlocal", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"request port of the local agentd (default {DEFAULT_PORT}; the stream uses the next one)")
    args = p.parse_args(argv)
    if not 1 <= args.port <= 65534:
        p.error(f"--port {args.port} is out of range; use 1 to 65534")
    ctl = f"tcp://{LOOPBACK}:{args.port}"
    daemon: subprocess.Popen[bytes] | None = None
    if _answers(ctl):
        print(f"using the agentd already answering at {ctl}", file=sys.stderr)
    else:
        import platformdirs

        ctl_port, pub_port, asked = pick_ports(args.port)
        ctl, pub = f"tcp://{LOOPBACK}:{ctl_port}", f"tcp://{LOOPBACK}:{pub_port}"
        # the default port keeps the state dir earlier sessions used (their jobs are re-adopted)
        state = Path(platformdirs.user_state_dir("fleetdeck")) / ("session-agentd" if asked else f"session-agentd-{ctl_port}")
        if not asked:
            print(f"port {args.port} or {args.port + 1} is taken by another program; using {ctl_port} and {pub_port} instead",
                  file=sys.stderr)
        print(f"starting a local agentd for this session at {ctl} (stream {pub}, state in {state}); "
              f"agentctl reaches it with --node {ctl}", file=sys.stderr)
        # Its log goes to STATE/agentd.log; on the terminal it would tear the live view.
        daemon = subprocess.Popen([sys.executable, "-m", "agentd.daemon", "--state-dir", str(state),
                                   "--ctl", ctl, "--pub", pub], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(ctl):
            if daemon.poll() is not None or time.monotonic() > deadline:
                print(f"agentd did not start at {ctl}; see {state / 'agentd.log'}", file=sys.stderr)
                return 2
    try:
        gui_ok = _has_display()
        if gui_ok:
            import importlib.util

            if importlib.util.find_spec("PySide6") is None:
                print("PySide6 is not installed (pip install 'fleetdeck[gui]'): showing agentctl top instead", file=sys.stderr)
                gui_ok = False
        else:
            print("no display (DISPLAY and WAYLAND_DISPLAY are unset): showing the live text view, agentctl top; q or Ctrl-C quits",
                  file=sys.stderr)
        cmd = [sys.executable, "-m", "gui.app", "--node", ctl, "--no-local"] if gui_ok else \
              [sys.executable, "-m", "agentd.cli", "--node", ctl, "top"]
        try:
            return subprocess.call(cmd)
        except KeyboardInterrupt:
            return 0
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.terminate()
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(5)


if __name__ == "__main__":
    sys.exit(main())
