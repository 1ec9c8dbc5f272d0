"""Encode and decode wire messages; every failure becomes a ProtocolError naming the field."""

from __future__ import annotations

import re
from functools import cache
from typing import TypeVar, Union

import msgspec

from agentd.protocol.errors import ErrorCode, ProtocolError
from agentd.protocol.messages import (
    COMMANDS,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    TOPICS,
    ErrorReply,
    Header,
    Reply,
    Request,
    StreamBody,
    StreamMsg,
)

_encoder = msgspec.msgpack.Encoder()
_header_decoder = msgspec.msgpack.Decoder(Header)
_FIELD_RE = re.compile(r"(?:at|in) `\$\.?([^`]*)`")
R = TypeVar("R", bound=Reply)
# msgspec raises DecodeError for most bad input, but UnicodeDecodeError for invalid UTF-8 in
# strings and RecursionError for absurd nesting: all of them are "malformed" to us.
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError)


def encode(msg: msgspec.Struct) -> bytes:
    """msgpack bytes of any protocol struct."""
    return _encoder.encode(msg)


def topic_of(msg: StreamMsg) -> bytes:
    """The PUB topic of a stream message; a message with a ``topic_suffix`` (a relay's
    per-node detail) extends its type's topic with it."""
    suffix: bytes = getattr(msg, "topic_suffix", b"")
    return TOPICS[type(msg)] + suffix


@cache
def _stream_decoder(n_types: int) -> msgspec.msgpack.Decoder[StreamMsg]:
    # Rebuilt only when a protocol module registers more stream messages (agentd.protocol.relay).
    extra = tuple(t for t in TOPICS if t not in StreamBody.__args__)
    return msgspec.msgpack.Decoder(Union[(StreamBody, *extra)] if extra else StreamBody)


def field_of(err: Exception | str) -> str:
    """The dotted field a msgspec error is about. A check in ``__post_init__`` names its own
    field (``- at `$.argv```) and msgspec appends the outer path (``- at `$.spec```), so the
    paths join outermost first: ``spec.argv``."""
    parts = [p for p in _FIELD_RE.findall(str(err)) if p]
    return ".".join(reversed(parts))


_field_of = field_of


@cache
def _request_decoder(n_commands: int) -> msgspec.msgpack.Decoder[Request]:
    # Rebuilt only when a command module registers more commands.
    # `X | Y` cannot be built from a runtime tuple of types; Union[...] can
    union = Union[tuple(COMMANDS.values())]  # type: ignore[valid-type]  # noqa: UP007
    return msgspec.msgpack.Decoder(union)


def decode_request(buf: bytes | memoryview) -> Request:
    """Decode a request body; raise ProtocolError (BAD_MESSAGE, VERSION, UNKNOWN_COMMAND)."""
    if len(buf) > MAX_MESSAGE_BYTES:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"request of {len(buf)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        header = _header_decoder.decode(buf)
    except _DECODE_ERRORS as exc:
        field = _field_of(exc)
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"malformed request header: {exc}", field) from None
    if header.v != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.VERSION,
            f"protocol version {header.v} is not supported; this daemon speaks version {PROTOCOL_VERSION}",
            "v",
        )
    if header.cmd not in COMMANDS:
        raise ProtocolError(ErrorCode.UNKNOWN_COMMAND, f"unknown command {header.cmd!r}; known: {', '.join(sorted(COMMANDS))}", "cmd")
    try:
        return _request_decoder(len(COMMANDS)).decode(buf)
    except _DECODE_ERRORS as exc:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"bad {header.cmd!r} request: {exc}", _field_of(exc)) from None


def request_id(buf: bytes | memoryview) -> int:
    """Best-effort request id of a body that failed to decode (0 when unreadable)."""
    try:
        return _header_decoder.decode(buf).id
    except Exception:  # noqa: BLE001 - garbage in, 0 out: the caller already reports the decode error
        return 0


def decode_reply(buf: bytes, expected: type[R]) -> R | ErrorReply:
    """Decode a reply: the expected type when ``ok``, else an ErrorReply."""
    try:
        raw = msgspec.msgpack.decode(buf)
        if isinstance(raw, dict) and raw.get("ok") is False:
            return msgspec.msgpack.decode(buf, type=ErrorReply)
        return msgspec.msgpack.decode(buf, type=expected)
    except _DECODE_ERRORS as exc:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"malformed {expected.__name__}: {exc}", _field_of(exc)) from None


def decode_stream(buf: bytes) -> StreamMsg:
    """Decode a stream body; ProtocolError when it is not one of the stream messages."""
    try:
        return _stream_decoder(len(TOPICS)).decode(buf)
    except _DECODE_ERRORS as exc:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"malformed stream message: {exc}", _field_of(exc)) from None


def error_reply(exc: ProtocolError, req_id: int = 0) -> ErrorReply:
    return ErrorReply(id=req_id, code=int(exc.code), message=exc.message, field=exc.field)
