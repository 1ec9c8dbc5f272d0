"""Ranges the schemas state (agentd.protocol.limits): priority, non-negative sizes and
offsets, finite wall times. A value outside them is refused while decoding, naming the field,
in requests and in replies (a peer daemon's replies are checked the same way)."""

from __future__ import annotations

import msgspec
import pytest

from agentd.protocol import ErrorCode, ProtocolError, decode_reply, decode_request
from agentd.protocol.messages import JobReply, LogsReply
from agentd.protocol.migration import MigrateChunkReply, MigrateOfferReply, MigrateStatusReply

SPEC = {"argv": ["true"]}
OFFER = {"v": 1, "cmd": "migrate_offer", "migration_id": "m1", "spec": SPEC, "source_node": "a", "source_job": "a.1"}
JOB = {"id": "n.1", "node": "n", "name": "x", "state": "running", "spec": SPEC}


@pytest.mark.parametrize("body, field", [
    ({"v": 1, "cmd": "priority", "job": "n.1", "priority": 11}, "priority"),
    ({"v": 1, "cmd": "priority", "job": "n.1", "priority": -11}, "priority"),
    ({"v": 1, "cmd": "submit", "spec": {**SPEC, "priority": 99}}, "spec.priority"),
    ({**OFFER, "first_submitted_s": float("nan")}, "first_submitted_s"),
    ({**OFFER, "first_submitted_s": float("inf")}, "first_submitted_s"),
    ({**OFFER, "first_submitted_s": -1.0}, "first_submitted_s"),
    ({**OFFER, "size_bytes": -1}, "size_bytes"),
    ({"v": 1, "cmd": "migrate_chunk", "migration_id": "m1", "offset": -1, "data": b""}, "offset"),
])
def test_out_of_range_requests_are_refused_naming_the_field(body, field):
    with pytest.raises(ProtocolError) as err:
        decode_request(msgspec.msgpack.encode(body))
    assert err.value.code == ErrorCode.BAD_MESSAGE
    assert err.value.field == field, err.value.message


@pytest.mark.parametrize("body, expected, field", [
    ({"migration_id": "m1", "next_offset": -1}, MigrateChunkReply, "next_offset"),
    ({"migration_id": "m1", "next_offset": -4096}, MigrateOfferReply, "next_offset"),
    ({"migration_id": "m1", "phase": "receiving", "size_bytes": -1}, MigrateStatusReply, "size_bytes"),
    ({"size": -1}, LogsReply, "size"),
    ({"job": {**JOB, "priority": 99}}, JobReply, "job.priority"),
    ({"job": {**JOB, "gpu_mem_held_bytes": -1}}, JobReply, "job.gpu_mem_held_bytes"),
])
def test_out_of_range_replies_are_refused_naming_the_field(body, expected, field):
    with pytest.raises(ProtocolError) as err:
        decode_reply(msgspec.msgpack.encode({"v": 1, "id": 1, "ok": True, **body}), expected)
    assert err.value.code == ErrorCode.BAD_MESSAGE
    assert err.value.field == field, err.value.message


def test_values_inside_the_ranges_decode():
    offer = decode_request(msgspec.msgpack.encode({**OFFER, "first_submitted_s": 1.7e9, "size_bytes": 0}))
    assert offer.first_submitted_s == 1.7e9
    reply = decode_reply(msgspec.msgpack.encode({"v": 1, "id": 1, "ok": True, "job": {**JOB, "priority": -10}}), JobReply)
    assert isinstance(reply, JobReply) and reply.job.priority == -10
