"""The programs are wired with plain imports: every part of the wheel is there, and a broken
module stops agentd or agentctl with its ImportError instead of silently dropping a feature
(`agentctl record`, migration)."""

from __future__ import annotations

import os
import subprocess
import sys

from agentd.cli import build_parser
from agentd.protocol.messages import Hello
from tests.agentd_proc import REPO, free_port


def _python(code: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_agentctl_has_every_verb_module():
    verbs = next(a for a in build_parser()._actions if a.dest == "verb").choices
    for verb in ("nodes", "submit", "migrate", "record", "replay", "recording", "cluster", "keys"):
        assert verb in verbs, verb


def test_a_broken_cli_module_fails_agentctl_loudly():
    # sys.modules[name] = None makes importing that module raise ImportError, as a broken one would.
    r = _python("import sys; sys.modules['agentd.cli.recording'] = None\n"
                "from agentd.cli import main; sys.exit(main(['--help']))")
    assert r.returncode != 0, f"agentctl ran without its recording verbs:\n{r.stdout[-800:]}"
    assert "agentd.cli.recording" in r.stderr and "Error" in r.stderr, r.stderr[-2000:]


def test_the_daemon_offers_migration(agentd):
    with agentd.client(timeout_s=10) as c:
        caps = c.call(Hello()).capabilities
    assert {"jobs", "migrate"} <= set(caps), caps


def test_a_broken_migration_module_fails_the_start_loudly(tmp_path):
    args = ["--state-dir", str(tmp_path / "s"), "--node-name", "broken", "--slurm", "off",
            "--ctl", f"tcp://127.0.0.1:{free_port()}", "--pub", f"tcp://127.0.0.1:{free_port()}"]
    try:
        r = _python("import sys; sys.modules['agentd.migration_service'] = None\n"
                    f"from agentd.daemon import main; sys.exit(main({args!r}))", timeout_s=30)
    except subprocess.TimeoutExpired:
        raise AssertionError("agentd started without its migration module instead of failing") from None
    assert r.returncode != 0
    assert "agentd.migration_service" in r.stderr and "Error" in r.stderr, r.stderr[-2000:]
