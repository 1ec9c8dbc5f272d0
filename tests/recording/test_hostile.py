"""Recordings made by an attacker: each is refused with one clear line (exit 2), or, for
damaged chunks in an otherwise good file, replayed around the damage with one warning; in
every case the reader stays within bounded memory and time and runs nothing stored in the file.

Each case runs agentctl in a child process with an address-space limit (so a failure here is a
MemoryError in the child, not a swapping test machine) and reports the child's peak RSS."""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentd.store.recording import Recorder, RecordingError, RecordingReader
from tests.recording import bad_files as bad

REPO = Path(__file__).resolve().parents[2]
#: The child may map this much address space at most (a safety net for a failing case).
AS_LIMIT_BYTES = 3 * 2**30
#: Peak RSS a child may reach: the interpreter with msgspec, sqlite and numpy is ~60 MiB.
PEAK_RSS_LIMIT_MIB = 250
#: Generous: these take well under 5 s; the limit only catches an endless loop or wait.
TIME_LIMIT_S = 90

# VmHWM, not getrusage's ru_maxrss: the child is forked from pytest (preexec_fn) and Linux
# carries the forking process's high-water mark into ru_maxrss across exec.
_RUNNER = """
import os, re, sys
from agentd.cli import main
try:
    rc = main()
except SystemExit as e:
    rc = e.code
finally:
    with open("/proc/self/status") as st, open(os.environ["RSS_OUT"], "w") as f:
        f.write(re.search(r"VmHWM:\\s+(\\d+)", st.read()).group(1))
sys.exit(rc)
"""


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT_BYTES, AS_LIMIT_BYTES))


def agentctl(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, float, float]:
    """(result, peak RSS in MiB, seconds) of agentctl ARGS in a memory-limited child."""
    rss = tmp_path / "rss.txt"
    env = dict(os.environ, RSS_OUT=str(rss), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-c", _RUNNER, *args], capture_output=True, text=True,
                         timeout=TIME_LIMIT_S, cwd=REPO, env=env, preexec_fn=_limit)
    took = time.monotonic() - t0
    peak = int(rss.read_text()) / 1024 if rss.exists() else float("inf")
    return res, peak, took


def one_line(res: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentctl: "), res.stderr
    return lines[0]


@pytest.mark.parametrize("make", bad.HOSTILE, ids=lambda f: f.__name__)
@pytest.mark.parametrize("verb", ["replay", "info"])
def test_hostile_file_is_one_line_exit_2_bounded(tmp_path, make, verb):
    p = tmp_path / "evil.db"
    pattern = make(p)
    args = ["replay", str(p), "--json"] if verb == "replay" else ["recording", "info", str(p)]
    res, peak, took = agentctl(tmp_path, *args)
    assert res.returncode == 2, res.stderr
    assert res.stdout == ""
    line = one_line(res)
    assert str(p) in line
    import re
    assert re.search(pattern, line), line
    assert peak < PEAK_RSS_LIMIT_MIB, f"peak RSS {peak:.0f} MiB"
    assert took < TIME_LIMIT_S


def test_out_of_order_times_stop_the_replay_with_one_line(tmp_path):
    p = tmp_path / "disorder.db"
    pattern = bad.out_of_order(p)
    res, peak, _ = agentctl(tmp_path, "replay", str(p), "--json")
    assert res.returncode == 2
    import re
    assert re.search(pattern, one_line(res))
    assert peak < PEAK_RSS_LIMIT_MIB


@pytest.mark.parametrize("make", bad.DAMAGED, ids=lambda f: f.__name__)
def test_damaged_chunks_are_skipped_with_one_warning(tmp_path, make):
    good = tmp_path / "good.db"
    from tests.recording.conftest import make_recording
    make_recording(good, seconds=150)
    full, _, _ = agentctl(tmp_path, "replay", str(good), "--json")
    assert full.returncode == 0 and full.stderr == ""
    p = tmp_path / "damaged.db"
    make(p)
    res, peak, _ = agentctl(tmp_path, "replay", str(p), "--json")
    assert res.returncode == 0, res.stderr
    line = one_line(res)
    assert line.startswith("agentctl: warning: ") and "skipped" in line and "damaged chunk" in line, line
    # the rest was replayed: every line is JSON, fewer than in the intact file
    got = [d for d in map(json.loads, res.stdout.splitlines()) if d["type"] == "sample"]
    want = [x for x in full.stdout.splitlines() if json.loads(x)["type"] == "sample"]
    assert 0 < len(got) < len(want)
    if make is not bad.wrong_type_chunk:  # there a chunk's sample range itself is damaged
        assert len(got) == len(want) - 120  # the first chunk (60 samples) of each node
    assert peak < PEAK_RSS_LIMIT_MIB, f"peak RSS {peak:.0f} MiB"
    # in-process: the damage is listed, and shows as a gap of the node
    with RecordingReader(p) as r:
        assert len(list(r.iter_derived())) == len(got)
        assert r.damage and all(d.reason for d in r.damage)
        assert any(g.reason == "damaged data" for g in r.gaps())
        # state at a moment inside the damaged chunk: the node is there, without a sample
        states = r.state_at(r.time_range()[0] + 5)
        assert set(states) == {"n0", "n1"}


def test_damaged_chunk_message_names_the_problem(tmp_path):
    p = tmp_path / "bomb.db"
    pattern = bad.bomb_chunk(p)
    with RecordingReader(p) as r:
        list(r.iter_derived())
        import re
        assert any(re.search(pattern, d.reason) for d in r.damage), r.damage


def test_trigger_never_fires(tmp_path):
    """recording set (a write), the recorder (appends) and the readers refuse the file; the
    table the triggers would write to stays empty and the title stays as it was."""
    p = tmp_path / "trigger.db"
    pattern = bad.trigger(p)
    for args in (["recording", "set", str(p), "--title", "renamed"], ["recording", "info", str(p)],
                 ["replay", str(p)]):
        res, _, _ = agentctl(tmp_path, *args)
        assert res.returncode == 2
        import re
        assert re.search(pattern, one_line(res))
    with pytest.raises(RecordingError, match=pattern):
        Recorder(p)
    conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    assert conn.execute("SELECT count(*) FROM pwned").fetchone()[0] == 0
    assert conn.execute("SELECT value FROM meta WHERE key = 'title'").fetchone()[0] == "test session"
    conn.close()


def test_reader_opens_read_only_and_trusts_no_schema(tmp_path):
    from tests.recording.conftest import make_recording

    p = tmp_path / "ok.db"
    make_recording(p, seconds=3)
    before = p.read_bytes()
    with RecordingReader(p) as r:
        assert r._conn.execute("PRAGMA query_only").fetchone()[0] == 1
        assert r._conn.execute("PRAGMA trusted_schema").fetchone()[0] == 0
        with pytest.raises(sqlite3.Error):
            r._conn.execute("CREATE TABLE x (y)")
        r.info()
        list(r.iter_derived())
    assert p.read_bytes() == before


def test_fifo_does_not_block_the_reader(tmp_path):
    p = tmp_path / "pipe.db"
    bad.fifo(p)
    t0 = time.monotonic()
    with pytest.raises(RecordingError, match="is a FIFO"):
        RecordingReader(p)
    assert time.monotonic() - t0 < 10
