"""The protocol codec: round trips, and every bad body becomes an error naming the field."""

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentd.metrics import CpuTimes, HostSample, NodeSample
from agentd.protocol import (
    COMMANDS,
    ErrorCode,
    JobSpec,
    ProtocolError,
    decode_reply,
    decode_request,
    decode_stream,
    encode,
)
from agentd.protocol.messages import ErrorReply, JobReply, SampleMsg


def test_every_command_round_trips_with_its_defaults():
    for name, cls in COMMANDS.items():
        if cls.__module__ != "agentd.protocol.messages":
            continue  # daemon-to-daemon commands are covered by their own tests
        fields = {f: "x" for f in cls.__struct_fields__ if f in ("job", "target")}
        if name == "submit":
            fields["spec"] = JobSpec(argv=["true"])
        if name == "priority":
            fields["priority"] = -5
        req = cls(id=7, **fields)
        assert decode_request(encode(req)) == req


@pytest.mark.parametrize(
    "body, code, field",
    [
        ({"v": 1, "cmd": "priority", "job": "n.1", "priority": "high"}, ErrorCode.BAD_MESSAGE, "priority"),
        ({"v": 1, "cmd": "nope"}, ErrorCode.UNKNOWN_COMMAND, "cmd"),
        ({"v": 99, "cmd": "hello"}, ErrorCode.VERSION, "v"),
        ({"v": 1, "cmd": "submit", "spec": {"argv": ["x"], "gpu": 1}}, ErrorCode.BAD_MESSAGE, "spec"),
        ({"v": 1, "cmd": "pause"}, ErrorCode.BAD_MESSAGE, ""),
    ],
)
def test_bad_requests_name_the_problem(body, code, field):
    with pytest.raises(ProtocolError) as err:
        decode_request(msgspec.msgpack.encode(body))
    assert err.value.code == code
    assert err.value.field == field
    assert err.value.message


def test_garbage_and_oversized_bodies_are_protocol_errors():
    for junk in (b"", b"\xc1", b"\x92\x01", b"\xff" * 100):
        with pytest.raises(ProtocolError):
            decode_request(junk)
    with pytest.raises(ProtocolError) as err:
        decode_request(b"\x00" * (9 * 1024 * 1024))
    assert err.value.code == ErrorCode.TOO_LARGE


def test_error_reply_is_recognised_whatever_was_expected():
    body = encode(ErrorReply(id=3, code=404, message="job 'n.9' not found", field="job"))
    reply = decode_reply(body, JobReply)
    assert isinstance(reply, ErrorReply) and reply.code == 404 and reply.field == "job"


def test_stream_round_trip():
    s = NodeSample(node="n1", mono_s=1.0, wall_s=2.0, host=HostSample(cpu_total=CpuTimes(user_s=3.0)))
    msg = SampleMsg(node="n1", seq=5, sample=s)
    assert decode_stream(encode(msg)) == msg


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_never_escape_as_other_exceptions(data):
    try:
        decode_request(data)
    except ProtocolError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(COMMANDS)),
       st.dictionaries(st.sampled_from(["job", "priority", "spec", "grace_s", "target", "id", "offset", "zz"]),
                       json_values, max_size=4))
def test_mutated_requests_decode_or_fail_cleanly(cmd, fields):
    body = msgspec.msgpack.encode({"v": 1, "cmd": cmd, **fields})
    try:
        req = decode_request(body)
    except ProtocolError as exc:
        assert exc.code in (ErrorCode.BAD_MESSAGE, ErrorCode.TOO_LARGE)
    else:
        assert type(req) is COMMANDS[cmd]


def test_invalid_utf8_in_a_string_is_a_bad_message():
    body = b"\x83\xa1v\x01\xa3cmd\xa5heN\xf2llo\xa2id\x01"
    with pytest.raises(ProtocolError) as err:
        decode_request(body)
    assert err.value.code == ErrorCode.BAD_MESSAGE
