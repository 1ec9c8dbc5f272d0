"""agentctl record against a real agentd, compared with agentctl watch --json run alongside."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentd.store.recording import RecordingError, RecordingReader

from .test_bad_files import agentctl

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "import sys; from agentd.cli import main; sys.exit(main())"]


def _spawn(*args: str, stdout=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def _finish(proc: subprocess.Popen, timeout: float = 20) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)


def _recorded_samples(path: Path) -> int:
    """Samples in a recording being written; 0 while the recorder has not yet laid out the file."""
    try:
        with RecordingReader(path) as r:
            return sum(r.info().samples.values())
    except RecordingError:  # not created yet, or still 0 bytes: SQLite writes its header lazily
        return 0


@pytest.mark.slow
def test_record_then_replay_equals_watch(agentd, tmp_path):
    out = tmp_path / "live.db"
    rec = _spawn("record", str(out), "--node", agentd.ctl, "--duration", "6", "--title", "live test")
    watch = _spawn("watch", "--json", "--node", agentd.ctl)
    try:
        rec_out, rec_err = _finish(rec, timeout=30)
    finally:
        watch.send_signal(signal.SIGINT)
        watch_out, _ = _finish(watch)
    assert rec.returncode == 0, rec_err
    assert "samples" in rec_err and "live.db" in rec_err and rec_out == ""
    live = [d for d in (json.loads(line) for line in watch_out.splitlines() if line.strip()) if d["type"] == "sample"]
    assert len(live) >= 5, watch_out

    res = agentctl("replay", str(out), "--json")
    assert res.returncode == 0, res.stderr
    replayed = {(d["node"], d["ts"]): d for d in map(json.loads, res.stdout.splitlines()) if d["type"] == "sample"}
    with RecordingReader(out) as r:
        start, end = r.time_range()
    # every live line inside the recorded span is replayed identically
    compared = 0
    for d in live:
        if start < d["ts"] <= end:
            assert replayed[(d["node"], d["ts"])] == d
            compared += 1
    assert compared >= 5

    info = json.loads(agentctl("recording", "info", str(out), "--json").stdout)
    assert info["title"] == "live test" and info["nodes"] == ["n1"] and info["samples_total"] >= 10
    assert info["gaps"] == [] and info["schema_version"] >= 1


def test_record_ctrl_c_closes_cleanly(agentd, tmp_path):
    out = tmp_path / "int.db"
    rec = _spawn("record", str(out), "--node", agentd.ctl)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _recorded_samples(out) < 3:
            time.sleep(0.2)
    finally:
        rec.send_signal(signal.SIGINT)
        _, err = _finish(rec)
    assert rec.returncode == 0, err
    assert "interrupted" in err
    assert not Path(f"{out}-wal").exists() or Path(f"{out}-wal").stat().st_size == 0


def test_record_unwritable_path_exits_2(tmp_path):
    res = agentctl("record", str(tmp_path / "nope" / "x.db"), "--duration", "1")
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr


def test_replay_options_and_set(tmp_path):
    from .conftest import START_S, make_recording

    p = tmp_path / "s.db"
    make_recording(p, seconds=25)
    res = agentctl("replay", str(p), "--json", "--from", "5", "--to", "9", "--node", "n1")
    everything = [json.loads(x) for x in res.stdout.splitlines()]
    lines = [d for d in everything if d["type"] == "sample"]
    assert res.returncode == 0 and {d["node"] for d in everything} == {"n1"}
    # the recording starts at the snapshot history (START_S - 1)
    assert [d["ts"] for d in lines] == [START_S - 1 + k for k in range(5, 10)]
    t0 = time.monotonic()
    res = agentctl("replay", str(p), "--from", "0", "--to", "4", "--speed", "10")
    assert res.returncode == 0 and len([x for x in res.stdout.splitlines() if " cpu " in x]) == 10
    assert time.monotonic() - t0 >= 0.35  # 4 s of recording at 10x
    assert agentctl("replay", str(p), "--node", "zz").returncode == 2
    assert agentctl("replay", str(p), "--from", "yesterday-ish").returncode == 2
    assert agentctl("recording", "set", str(p), "--title", "T2", "--notes", "N2").returncode == 0
    text = agentctl("recording", "info", str(p)).stdout
    assert "T2" in text and "N2" in text and "n0 (27 samples)" in text and "2 control actions" in text
