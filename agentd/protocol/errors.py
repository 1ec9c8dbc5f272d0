"""Error codes of the wire protocol and the exception that carries them."""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Numeric error codes of error replies. Stable: clients switch on them."""

    BAD_MESSAGE = 400  # not msgpack, truncated, wrong types; ``field`` names the culprit
    UNAUTHORIZED = 401  # the caller's role may not do this (a viewer asking for control), or it is unverified
    FORBIDDEN = 403  # the caller is known but the object is not theirs (another user's job)
    NOT_FOUND = 404  # unknown job id, unknown node
    UNKNOWN_COMMAND = 405  # a ``cmd`` this daemon does not know
    CONFLICT = 409  # the object is in a state that forbids the action (resume a queued job)
    TOO_LARGE = 413  # over the maximum message size or a transfer limit
    INVALID = 422  # well-formed but impossible (more GPUs than the node has)
    VERSION = 426  # protocol version not supported
    FAILED = 500  # the action was tried and failed (the message says why)
    UNAVAILABLE = 503  # the daemon is shutting down or a backend is missing


class ProtocolError(Exception):
    """An error that becomes an error reply: a code, a message and the offending field."""

    def __init__(self, code: ErrorCode, message: str, field: str = "") -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.field = field

    def __repr__(self) -> str:
        return f"ProtocolError({self.code.name}, {self.message!r}, field={self.field!r})"
