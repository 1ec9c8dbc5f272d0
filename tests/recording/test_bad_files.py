"""Files that are not (whole, readable) recordings give one clear line, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agentd.store.recording import Recorder, RecordingError, RecordingReader
from tests.recording import bad_files as bad

from .conftest import make_recording

REPO = Path(__file__).resolve().parents[2]


def agentctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from agentd.cli import main; sys.exit(main())", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


CASES = [bad.not_sqlite, bad.empty_file, bad.truncated, bad.newer, bad.other_sqlite, bad.missing]


@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__.strip("_"))
def test_reader_raises_recording_error(tmp_path, make):
    p = tmp_path / "bad.db"
    pattern = make(p)
    with pytest.raises(RecordingError, match=pattern):
        RecordingReader(p)


@pytest.mark.parametrize("make", [bad.not_sqlite, bad.truncated, bad.newer], ids=lambda f: f.__name__.strip("_"))
def test_cli_exits_2_with_one_line(tmp_path, make):
    p = tmp_path / "bad.db"
    make(p)
    for verb in (["replay", str(p), "--json"], ["recording", "info", str(p)]):
        res = agentctl(*verb)
        assert res.returncode == 2, res.stderr
        assert res.stdout == ""
        assert res.stderr.count("\n") == 1 and res.stderr.startswith("agentctl: "), res.stderr
        assert "Traceback" not in res.stderr


def test_empty_recording_info_works_replay_says_why(tmp_path):
    p = tmp_path / "empty.db"
    Recorder(p, title="nothing yet").close()
    with RecordingReader(p) as r:
        info = r.info()
        assert info.title == "nothing yet" and info.samples == {} and list(r.iter_derived()) == []
    res = agentctl("replay", str(p))
    assert res.returncode == 2 and "holds no samples" in res.stderr and res.stderr.count("\n") == 1


def test_recorder_refuses_foreign_and_newer_files(tmp_path):
    p = tmp_path / "other.db"
    bad.other_sqlite(p)
    with pytest.raises(RecordingError, match="not a Fleetdeck recording"):
        Recorder(p)
    q = tmp_path / "newer.db"
    bad.newer(q)
    with pytest.raises(RecordingError, match="record to a new file"):
        Recorder(q)


def test_damaged_pages_become_recording_errors(tmp_path):
    p = tmp_path / "damaged.db"
    make_recording(p, seconds=60)
    data = bytearray(p.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for off in range(page * 3, len(data), page):  # scribble over every page after the schema
        data[off:off + 64] = b"\xff" * 64
    p.write_bytes(bytes(data))
    with pytest.raises(RecordingError), RecordingReader(p) as r:
        list(r.iter_derived())
        r.info()
