"""A headless node has no numpy: recordings are written and read in pure Python there."""

NO_NUMPY = r"""
import sys
sys.modules["numpy"] = None  # as on a headless node without extras (and inside agentd)
from agentd.protocol.messages import SampleMsg
from agentd.store.recording import Recorder, RecordingReader
from agentd.store.recording_synth import SyntheticNode
gen = SyntheticNode("n0", cores=2, gpus=1, jobs=1)
samples = [gen.next() for _ in range(7)]
with Recorder(sys.argv[1], chunk_rows=3) as rec:
    for i, s in enumerate(samples):
        rec.feed("n0", SampleMsg(node="n0", seq=i + 1, sample=s))
with RecordingReader(sys.argv[1]) as r:
    assert r.samples("n0", 0, 2e9) == samples
assert "numpy" not in {m for m, v in sys.modules.items() if v is not None}
print("ok")
"""


def test_records_and_reads_without_numpy(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-c", NO_NUMPY, str(tmp_path / "nonp.db")], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(repo)}, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
