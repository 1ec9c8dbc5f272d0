"""``make run``: a local agentd and the app connected to it, on this machine.

Uses an agentd already answering on the default endpoint, or starts one for the session (and
stops it, by pid, on exit). Without a display, says so in one line and shows the live text
view (``agentctl top``) instead of the app.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from agentd.config import DEFAULT_CTL, DEFAULT_PUB
from agentd.transport.client import NodeClient, Unreachable


def _answers(endpoint: str, timeout_s: float = 0.5) -> bool:
    with NodeClient(endpoint, timeout_s=timeout_s) as c:
        try:
            c.hello()
            return True
        except Unreachable:
            return False


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def main() -> int:
    daemon: subprocess.Popen | None = None
    if not _answers(DEFAULT_CTL):
        import platformdirs

        state = Path(platformdirs.user_state_dir("fleetdeck")) / "session-agentd"
        print(f"starting a local agentd for this session (state in {state})", file=sys.stderr)
        # Its log goes to STATE/agentd.log; on the terminal it would tear the live view.
        daemon = subprocess.Popen([sys.executable, "-m", "agentd.daemon", "--state-dir", str(state),
                                   "--ctl", DEFAULT_CTL, "--pub", DEFAULT_PUB], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not _answers(DEFAULT_CTL):
            if daemon.poll() is not None or time.monotonic() > deadline:
                print("agentd did not start; see the messages above", file=sys.stderr)
                return 2
    try:
        gui_ok = _has_display()
        if gui_ok:
            import importlib.util

            if importlib.util.find_spec("PySide6") is None:
                print("PySide6 is not installed (pip install 'fleetdeck[gui]'): showing agentctl top instead", file=sys.stderr)
                gui_ok = False
        else:
            print("no display (DISPLAY and WAYLAND_DISPLAY are unset): showing the live text view, agentctl top; Ctrl-C quits", file=sys.stderr)
        cmd = [sys.executable, "-m", "gui.app", "--node", DEFAULT_CTL, "--no-local"] if gui_ok else \
              [sys.executable, "-m", "agentd.cli", "--node", DEFAULT_CTL, "top"]
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


if __name__ == "__main__":
    sys.exit(main())
