"""The v2 sample codec is lossless: whatever a sample holds comes back bit for bit."""

from __future__ import annotations

import math
import struct

import msgspec
import pytest

from agentd.metrics.samples import CpuTimes, GpuProcess, GpuSample, HostSample, NodeSample, ProcSample
from agentd.store import recording_codec
from agentd.store.recording_codec import (
    CHUNK_ROWS,
    Shape,
    ShapeBook,
    decode_chunk,
    decode_sample,
    encode_chunk,
    split_sample,
)
from agentd.store.recording_synth import SyntheticNode


@pytest.fixture(autouse=True, params=["numpy", "pure-python"])
def codec_path(request, monkeypatch):
    """Every codec test runs with numpy and without it (a headless node has no numpy)."""
    monkeypatch.setattr(recording_codec, "USE_NUMPY", request.param == "numpy")
    return request.param


def round_trip(samples: list[NodeSample]) -> list[NodeSample]:
    book = ShapeBook()
    rows = []
    for s in samples:
        split = split_sample(s)
        rows.append((book.id_for(split), split))
    shapes = {sid: Shape.from_row(t, o) for sid, t, o in book.take_pending()}
    return [decode_sample(r) for r in decode_chunk(encode_chunk(rows), shapes)]


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def odd_sample(i: int, user_s: float, gpu_power: int | None = 1) -> NodeSample:
    return NodeSample(
        node="n", mono_s=1000.0 + i, wall_s=1.7e9 + i * 0.1,
        host=HostSample(cpu_total=CpuTimes(user_s=user_s, idle_s=i / 3), temps_c={"x": math.inf, "z": -0.0}),
        gpus=[GpuSample(index=0, power_mw=gpu_power, energy_mj=2**62 + i, throttle_reasons=0, sm_util_pct=None,
                        processes=[GpuProcess(pid=7, used_bytes=-5)])],
    )


def test_synthetic_samples_come_back_equal():
    gen = SyntheticNode("n0", cores=8)
    samples = [gen.next() for _ in range(CHUNK_ROWS)]
    assert round_trip(samples) == samples


def test_floats_that_are_not_fixed_point_keep_their_bits():
    samples = [odd_sample(i, user_s=[0.1 + 0.2, 1e-300, 123.456789012345, 3.0][i % 4]) for i in range(9)]
    back = round_trip(samples)
    assert back == samples
    assert [bits(s.host.cpu_total.user_s) for s in back] == [bits(s.host.cpu_total.user_s) for s in samples]
    assert bits(back[0].host.temps_c["z"]) == bits(-0.0) and back[0].host.temps_c["x"] == math.inf


def test_nan_and_none_and_huge_counters():
    samples = [odd_sample(i, user_s=math.nan if i == 2 else float(i), gpu_power=None if i == 3 else i) for i in range(6)]
    back = round_trip(samples)
    assert math.isnan(back[2].host.cpu_total.user_s) and bits(back[2].host.cpu_total.user_s) == bits(math.nan)
    assert back[3].gpus[0].power_mw is None and back[4].gpus[0].power_mw == 4
    assert [s.gpus[0].energy_mj for s in back] == [2**62 + i for i in range(6)]
    nan_free = [s for i, s in enumerate(samples) if i != 2]
    assert [s for i, s in enumerate(back) if i != 2] == nan_free


def test_counter_beyond_int64_is_stored_whole():
    s = odd_sample(0, 1.0)
    big = msgspec.structs.replace(s, gpus=[msgspec.structs.replace(s.gpus[0], energy_mj=2**64 - 1)])
    assert split_sample(big).raw is not None
    assert round_trip([s, big, s]) == [s, big, s]


def test_process_scans_keep_the_shape():
    gen = SyntheticNode("n0", cores=2, gpus=1, jobs=1)
    plain = gen.next()
    scan = msgspec.structs.replace(gen.next(), procs=[ProcSample(pid=1, name="ä", cpu_time_s=0.5, cpu_time_prev_s=None)])
    assert split_sample(plain).template == split_sample(scan).template
    assert round_trip([plain, scan]) == [plain, scan]


def test_damaged_chunk_raises_value_error():
    gen = SyntheticNode("n0", cores=2, gpus=1, jobs=1)
    split = split_sample(gen.next())
    body = encode_chunk([(1, split)])
    with pytest.raises(ValueError, match="shape 1"):
        decode_chunk(body, {})
    with pytest.raises(ValueError, match="decompressed"):
        decode_chunk(body[:-5], {})


def test_numpy_and_pure_python_decode_the_same_bytes(monkeypatch):
    gen = SyntheticNode("n0", cores=4, gpus=2, jobs=2)
    samples = [gen.next() for _ in range(10)] + [odd_sample(i, user_s=[0.3, 1e-300, -0.0][i % 3]) for i in range(6)]
    book = ShapeBook()
    rows = [(book.id_for(sp), sp) for sp in map(split_sample, samples)]
    shapes = {sid: Shape.from_row(t, o) for sid, t, o in book.take_pending()}
    body = encode_chunk(rows)
    decoded = []
    for use in (True, False):
        monkeypatch.setattr(recording_codec, "USE_NUMPY", use)
        decoded.append(decode_chunk(body, shapes))
    assert decoded[0] == decoded[1]
    assert [decode_sample(r) for r in decoded[0]] == samples
