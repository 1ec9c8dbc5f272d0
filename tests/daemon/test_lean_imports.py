"""agentd's import of its own program module stays lean: no sqlite-utils (and so no numpy) before
main() has kept numpy out. A node's RSS budget is 40 MiB and numpy alone costs 11 MiB of it."""

from __future__ import annotations

import subprocess
import sys

from tests.agentd_proc import REPO


def test_importing_the_daemon_loads_neither_sqlite_utils_nor_numpy():
    code = "import sys, agentd.daemon; print(sorted(m for m in ('numpy', 'sqlite_utils') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"agentd.daemon imports {out.stdout.strip()} at module level"
