"""The versioned wire protocol shared by agentd, agentctl and the app (no sockets here)."""

from agentd.protocol import gang as _gang  # noqa: F401  (registers group_* and gang_* commands)
from agentd.protocol import migration as _migration  # noqa: F401  (registers migrate_* commands)
from agentd.protocol import radar as _radar  # noqa: F401  (registers group_health/capture_evidence)
from agentd.protocol import relay as _relay  # noqa: F401  (registers nodes/follow and the relay stream)
from agentd.protocol.codec import decode_reply, decode_request, decode_stream, encode, error_reply, topic_of
from agentd.protocol.errors import ErrorCode, ProtocolError
from agentd.protocol.jobs import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    CheckpointContract,
    Event,
    JobInfo,
    JobSpec,
    JobState,
    ToolCall,
)
from agentd.protocol.limits import PRIORITY_MAX, PRIORITY_MIN
from agentd.protocol.messages import *  # noqa: F403  (the schema table is the API)
from agentd.protocol.messages import COMMANDS, MAX_MESSAGE_BYTES, PROTOCOL_VERSION

__all__ = [
    "ACTIVE_STATES", "COMMANDS", "CheckpointContract", "ErrorCode", "Event", "JobInfo", "JobSpec",
    "JobState", "MAX_MESSAGE_BYTES", "PRIORITY_MAX", "PRIORITY_MIN", "PROTOCOL_VERSION",
    "ProtocolError", "TERMINAL_STATES", "ToolCall", "decode_reply", "decode_request",
    "decode_stream", "encode", "error_reply", "topic_of",
]
