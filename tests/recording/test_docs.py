"""docs/recording.md stays true: its SQL examples run on a real recording, its commands exist."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from agentd.store.schema_recording import SCHEMA_VERSION

from .conftest import make_recording
from .test_bad_files import agentctl

DOC = Path(__file__).resolve().parents[2] / "docs" / "recording.md"


def sql_examples() -> list[str]:
    text = DOC.read_text()
    return [re.sub(r"\s+", " ", q) for q in re.findall(r'sqlite3 session\.db "(.*?)"', text, re.S)]


def test_sql_examples_run(tmp_path):
    path = tmp_path / "session.db"
    make_recording(path, seconds=12)
    queries = sql_examples()
    assert len(queries) >= 5
    conn = sqlite3.connect(path)
    try:
        for q in queries:
            conn.execute(q).fetchall()
        cpu = conn.execute(queries[2]).fetchall()
        assert any(row[2] is not None and 0 <= row[2] <= 100 for row in cpu)
        actions = conn.execute(queries[3]).fetchall()
        assert [a[1] for a in actions] == ["alice"]
    finally:
        conn.close()


def test_documented_tables_and_version_match_the_schema(tmp_path):
    path = tmp_path / "session.db"
    make_recording(path, seconds=1)
    conn = sqlite3.connect(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()
    text = DOC.read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", text, re.M))
    assert documented == tables
    assert f"schema version (now {SCHEMA_VERSION})" in text


def test_documented_commands_have_help():
    for verb in (["record"], ["replay"], ["recording", "info"], ["recording", "set"]):
        res = agentctl(*verb, "--help")
        assert res.returncode == 0, res.stderr
        options = set(re.findall(r"--[a-z-]+", res.stdout))
        line = next(ln for ln in DOC.read_text().splitlines() if ln.startswith("agentctl " + " ".join(verb) + " "))
        assert set(re.findall(r"--[a-z-]+", line)) <= options, (verb, line)
