"""Generate docs/protocol.md from the schemas, so the document cannot drift from the code.

    python -m agentd.protocol.docs > docs/protocol.md
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from typing import Any

import msgspec

import agentd.protocol  # noqa: F401  (registers every command module)
from agentd.protocol.errors import ErrorCode
from agentd.protocol.limits import LIMITS
from agentd.protocol.messages import COMMANDS, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, TOPICS, Request, Reply, StreamMsg

try:  # optional command modules register themselves on import
    import agentd.protocol.migration  # noqa: F401
except ImportError:
    pass

INTRO = f"""# agentd wire protocol, version {PROTOCOL_VERSION}

Generated from `agentd/protocol/` by `python -m agentd.protocol.docs`; a test fails when this
file and the schemas disagree.

## Sockets and frames
- Requests: a client DEALER connects to the daemon's ROUTER (default `tcp://127.0.0.1:7710`) and
  sends one frame, a msgpack map. Every request carries `v` (protocol version), `cmd`, `id`
  (chosen by the client, echoed by the reply) and optionally `actor` (who asks, for the audit
  log; on CURVE connections the name of the client's key is used instead).
- Replies: one msgpack frame. `ok: true` and the reply fields below, or an error reply
  `{{v, id, ok: false, code, message, field}}`: `field` names the offending field when there is one.
- Stream: a SUB connects to the endpoint that `hello` returns (default `tcp://127.0.0.1:7711`).
  Frames: topic, then a msgpack body with `t` (message type), `v`, `node` and `seq` (grows by
  one per message). Topics: {", ".join(f"`{t.decode()}`" for t in TOPICS.values())}.
- Late joiners (Clone pattern): subscribe first, then send `snapshot`; drop stream messages
  with `seq` at or below the snapshot's `seq`. A gap in `seq` (or `seq` going back: a restarted
  daemon) means: take a new snapshot. A heartbeat goes out after one quiet second; a client
  marks the node stale after three missed beats, probes it with `hello`, and reconnects.
- Limits: frames over {MAX_MESSAGE_BYTES} bytes are refused by the sockets (`ZMQ_MAXMSGSIZE`).
  A frame that cannot be routed is dropped and counted; everything else gets a reply.
- Security: on any non-loopback address the daemon requires CURVE (see docs/security.md).
  Roles: `viewer` may read, `operator` may also control, `daemon` is for migrations between
  daemons.

## Error codes
| code | name | meaning |
|---|---|---|
"""


_CONSTRAINTS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "len>="),
                ("max_length", "len<="), ("pattern", "~"))


def _type_name(t: Any) -> str:
    """A field's type as the docs show it; constraints (agentd.protocol.limits) in brackets."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is typing.Annotated:
        cons = [f"{sym}{getattr(m, attr)}" for m in args[1:] if isinstance(m, msgspec.Meta)
                for attr, sym in _CONSTRAINTS if getattr(m, attr) is not None]
        return f"{_type_name(args[0])}[{', '.join(cons)}]" if cons else _type_name(args[0])
    if origin in (list, dict) and args:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else _type_name(a) for a in args)
    if getattr(t, "__origin__", None) is not None or "|" in str(t):
        return str(t).replace("typing.", "").replace("agentd.protocol.jobs.", "").replace("agentd.metrics.samples.", "")
    return getattr(t, "__name__", None) or str(t)


def _fields(cls: type[msgspec.Struct], skip: tuple[str, ...]) -> list[str]:
    rows = []
    for f in msgspec.structs.fields(cls):
        if f.name in skip:
            continue
        if f.default is not msgspec.NODEFAULT:
            default = repr(f.default)
        elif f.default_factory is not msgspec.NODEFAULT:
            default = repr(f.default_factory())
        else:
            default = "required"
        rows.append(f"| `{f.encode_name}` | `{_type_name(f.type)}` | {default} |")
    return rows


def _doc(cls: type) -> str:
    return inspect.cleandoc(cls.__doc__ or "").replace("\n", " ")


def render() -> str:
    out = [INTRO]
    for code in ErrorCode:
        out.append(f"| {int(code)} | `{code.name}` | {_ERROR_MEANING.get(code, '')} |")
    out.append("\n## Limits\n")
    out.append("Everything a client sends is bounded; a request over a limit gets `BAD_MESSAGE` (or "
               "`INVALID`) with `field` naming the field and the message the limit. Floats are finite "
               "(NaN and infinity are refused). The constants live in `agentd/protocol/limits.py`.\n")
    out += ["| what | limit |", "|---|---|", *(f"| {what} | {limit} |" for what, limit in LIMITS), ""]
    out.append("\n## Commands\n")
    for name, cls in sorted(COMMANDS.items()):
        out.append(f"### `{name}` (role: {cls.role})\n\n{_doc(cls)}\n")
        rows = _fields(cls, ("v", "id", "actor"))
        if rows:
            out += ["| field | type | default |", "|---|---|---|", *rows, ""]
        reply = cls.reply
        out.append(f"Reply `{reply.__name__}`:\n")
        rows = _fields(reply, ("v", "id", "ok"))
        out += (["| field | type | default |", "|---|---|---|", *rows] if rows else ["(no fields)"]) + [""]
    out.append("## Stream messages\n")
    for cls, topic in TOPICS.items():
        out.append(f"### `{cls.__struct_config__.tag}` (topic `{topic.decode()}`)\n\n{_doc(cls)}\n")
        out += ["| field | type | default |", "|---|---|---|", *_fields(cls, ("v", "node", "seq")), ""]
    out.append("## Types used above\n")
    from agentd.metrics import samples
    from agentd.protocol import jobs

    for module in (jobs, samples):
        for _, cls in sorted(vars(module).items()):
            if isinstance(cls, type) and issubclass(cls, msgspec.Struct) and cls.__module__ == module.__name__ and cls.__name__ != "Struct":
                out.append(f"### `{cls.__name__}`\n\n{_doc(cls)}\n")
                out += ["| field | type | default |", "|---|---|---|", *_fields(cls, ()), ""]
    return "\n".join(out).rstrip() + "\n"


_ERROR_MEANING = {
    ErrorCode.BAD_MESSAGE: "not msgpack, truncated, or a field of the wrong type (`field` names it)",
    ErrorCode.UNAUTHORIZED: "the client's key lacks the role the command needs",
    ErrorCode.NOT_FOUND: "no such job (or the job is on another node)",
    ErrorCode.UNKNOWN_COMMAND: "a `cmd` this daemon does not know",
    ErrorCode.CONFLICT: "the job's state forbids the action (the message says which state)",
    ErrorCode.TOO_LARGE: "over the message size or a transfer limit",
    ErrorCode.INVALID: "well-formed but impossible here (more GPUs than the node has...)",
    ErrorCode.VERSION: "protocol version not supported",
    ErrorCode.FAILED: "the action was tried and failed (the message says why)",
    ErrorCode.UNAVAILABLE: "the node does not offer this (no job control, no Slurm...)",
}

if __name__ == "__main__":
    sys.stdout.write(render())
