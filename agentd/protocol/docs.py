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
from agentd.protocol.messages import (
    CAPABILITIES,
    COMMANDS,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    TOPICS,
)

INTRO = f"""# agentd wire protocol, version {PROTOCOL_VERSION}

Generated from `agentd/protocol/` by `python -m agentd.protocol.docs`; a test fails when this
file and the schemas disagree. This page is enough to write a client in any language with a
ZeroMQ library (libzmq 4.x bindings) and a msgpack library; `tests/protocol/test_independent_client.py`
is such a client, written from this page with `pyzmq` and `msgpack` only.

## Sockets and frames
- Requests: a client DEALER connects to the daemon's ROUTER (default `tcp://127.0.0.1:7710`, or
  the node's local socket, `local_endpoint` in `hello`; see *Identity*) and sends each request as
  ONE frame, a msgpack map. Each request gets exactly one reply frame on the same socket.
  Replies to different requests may come back in any order (slow ones such as `pause` and
  `cancel` run in parallel): match them by `id`.
- Stream: a SUB connects to the endpoint that `hello` returns in `pub_endpoint` (default
  `tcp://127.0.0.1:7711`). Each message is two frames: the topic (ASCII, equal to the body's
  `t`), then the msgpack body. Topics: {", ".join(f"`{t.decode()}`" for t in TOPICS.values())}.
  Subscribe to `""` for everything, or to single topics (ZeroMQ prefix match on the first frame).

## Encoding
- Every body is a msgpack map with string keys. The map's type is in `cmd` (requests) or `t`
  (stream messages); replies have none (you know what you asked).
- Integers are msgpack ints, floats are float64 (`NaN` and infinities are refused in requests),
  `bytes` are msgpack `bin`, strings are UTF-8 `str`, `None` is `nil`, lists are arrays.
- Integer map keys: these maps have integer keys (msgpack ints, not strings), because they are
  keyed by GPU index: {{INT_KEYS}}. Decoders that insist on string keys must be told.
- Omitted defaults: any field with a default (the third column of the tables below) may be left
  out of a request, and IS left out of many reply and stream maps when it has its default
  value (job, event and sample structs are encoded without default fields). Read a missing field
  as its default. Unknown fields in replies and stream messages: ignore them (newer daemons add
  fields); unknown fields in a job spec are refused (`BAD_MESSAGE`, `field` names it).
- Timestamps: `*_s` fields are seconds; `wall_s` and `*_s` times are Unix time (float),
  `mono_s` is the node's monotonic clock (only differences mean something).

## Requests, ids and errors
- Every request carries `v` (protocol version, {PROTOCOL_VERSION}), `cmd`, `id` and optionally
  `actor` (a note for the audit log; the daemon names the caller itself).
- `id` is an integer chosen by the client (any value a signed or unsigned 64-bit msgpack int
  holds; use 1, 2, 3...; 0 is the default and reads as "no id"). The reply carries the same
  `id`, errors included. A body whose `id` cannot be read (not msgpack, not a map, `id` not an
  integer) gets an error reply with `id: 0`.
- A successful reply is a map with `v`, `id`, `ok: true` and the reply fields below. A failed
  one is `{{v, id, ok: false, code, message, field}}`: `code` from the table below, `message` in
  words (the object, the value and what to do), `field` the dotted path of the offending field
  (`spec.argv`) or `""`. Check `ok` before reading anything else.
- A request with a `v` other than {PROTOCOL_VERSION} gets `VERSION`; an unknown `cmd` gets
  `UNKNOWN_COMMAND` with the known ones listed in `message`.

## Stream: seq, epoch, late join
- Every stream body has `t`, `v`, `node`, `seq` and `epoch`. `seq` is ONE counter for all
  topics of a daemon: it grows by exactly one per message published, whatever the topic,
  starting at 1 when the daemon starts. `epoch` names that run of the daemon (its start time in
  microseconds since 1970); `hello` and `snapshot` replies carry the same `epoch`.
- A client subscribed to every topic sees consecutive `seq` values; a gap means messages were
  lost (ZeroMQ drops stream messages for a subscriber that reads too slowly): take a new
  snapshot. A client subscribed to some topics only sees gaps that are other topics' messages,
  not losses: it cannot detect loss by `seq` and must not resnapshot on gaps (subscribe to `hb`
  too, and treat a silent second as a hint).
- Restart: a message whose `epoch` differs from the one you hold comes from a restarted daemon:
  its `seq` started again at 1; drop your state and take a new snapshot. Do not infer a restart
  from `seq` going back.
- Late join (Clone pattern): connect and subscribe the SUB first, then send `snapshot`, keep
  reading the stream meanwhile, and apply the snapshot; then apply stream messages with the
  snapshot's `epoch` and `seq` greater than the snapshot's `seq`, and drop the ones at or below
  it (the snapshot already contains them).
- Liveness: a `hb` (heartbeat) goes out after one quiet second; mark the node stale after three
  missed beats, probe it with `hello`, and reconnect.

## Frame limits: exactly what happens
- Both directions: {MAX_MESSAGE_BYTES} bytes per frame (`MAX_MESSAGE_BYTES`).
- A request frame over the limit: the daemon's libzmq closes that connection as soon as the
  frame header announces the size (`ZMQ_MAXMSGSIZE`), before agentd sees a byte of the body, so
  there is no reply to that request, nor to any other request still unanswered on that
  connection; no error is logged. A libzmq DEALER reconnects by itself and later requests are
  answered. So a client measures the encoded request before sending and refuses it itself with
  `TOO_LARGE` (agentctl does); a request that is lost this way times out.
- Within the limit, every request that reaches agentd gets exactly one reply: not msgpack,
  not a map, wrong types, a field over its limit (see *Limits*), unknown command or version all
  get an error reply naming the field. Only a message of two or more frames (a DEALER sends one
  frame per request) is dropped without a reply, and counted.
- Replies and stream messages always fit the limit: lists that would not fit are cut and say so
  (`jobs_omitted` in `snapshot`, `omitted` in `jobs`, `eof: false` in `logs`). Set the same
  limit on your sockets to be safe against a rogue peer.

## Identity: who the daemon thinks you are
The daemon never believes what a client says about itself; `hello` tells you what it made of you
(`role`, `user`, `verified_by`).
- Local socket (`local_endpoint` in `hello`, an `ipc://` path; the config's `local_socket`;
  by default `/run/fleetdeck/agentd-*.sock` for a root daemon): every local user may connect,
  and the kernel's peer credentials name your uid. Always exact.
- Loopback TCP (`tcp://127.0.0.1:7710`): the daemon looks up the owner of your connection in the
  kernel's TCP table. libzmq tells it only your IP address, so it takes every connection from
  that address to its port: connect from your own random source address in `127.0.0.0/8`
  (with libzmq: the endpoint `tcp://127.A.B.C:0;127.0.0.1:7710`, A, B random 0-255, C 1-254), so
  those connections are yours alone. From `127.0.0.1` while another user also has a connection
  from there, you are `unverified` (viewer rights only), never the other user.
- Any other address: CURVE (ZeroMQ's CurveZMQ) on both sockets, always. Give the client
  socket your key pair (`curve_publickey`, `curve_secretkey`) and the node's public key
  (`curve_serverkey`, from `STATE_DIR/keys/server.key` on the node). A key that is not
  authorised gets no answer at all (the handshake fails before any message is read).
- Roles: `viewer` (read), `user` (submit; control own jobs; priorities up to 0), `operator`
  (every job, any priority), `admin` (also run jobs as other users), `daemon` (migration verbs
  between daemons). Root and the user agentd runs as are `admin`; other local users are `user`
  unless the daemon's config names them operators or admins. A command needs the role in its
  heading below; the object may need more (another user's job: `FORBIDDEN`).

Key files are ZeroMQ certificates (ZPL text, as `zmq_cert`, pyzmq's `zmq.auth` and czmq write):

```
#   any comment lines
metadata
    user = "alice"
curve
    public-key = "C7V=GBc+x7ix84PPRGIvaRHQ!hJyjrqt^:@Oi4r0"
```

The secret file (`NAME.key_secret`, mode 0600) has `secret-key = "..."` under `curve` too. Keys
are Z85 text, 40 characters. The daemon keeps its pair in `STATE_DIR/keys/server.key` and
`server.key_secret`, and authorises clients by public certificate files in
`STATE_DIR/authorized_keys/<role>/NAME.key`, where `<role>` is one of `viewer`, `user`,
`operator`, `admin`, `daemon` and `NAME` is the name shown in the audit log. The optional
`user = "NAME"` line in the `metadata` section names the Unix user the key's holder acts as
(jobs it submits run as that user); a key without it may not submit. Files are re-read on each
connection and request; removing one revokes the key within a second. See docs/security.md.

## Capabilities
`hello` lists what this daemon offers in `capabilities`:

| capability | meaning |
|---|---|
{{CAPS}}

## A client, step by step
1. DEALER connects to the request endpoint; send `{{"v": {PROTOCOL_VERSION}, "cmd": "hello", "id": 1}}`,
   wait for the reply with a timeout; check `ok`, `protocol`, `capabilities`, `role`; keep
   `epoch` and `pub_endpoint`.
2. SUB connects to `pub_endpoint`, subscribes, then `snapshot` (`history`: how many recent
   samples); apply it; apply stream messages with `seq` above the snapshot's.
3. `submit` with a `spec` (`argv` at least) returns the job (`job.id`, e.g. `gpu-a.7`); `pause`,
   `resume`, `priority`, `cancel` take that `job` id and return the job after the action; the
   stream's `job` topic carries every change of it.

## Error codes
| code | name | meaning |
|---|---|---|
"""


def _int_key_fields() -> list[str]:
    """``Struct.field`` of every map with integer keys in the messages a client reads."""
    from agentd.metrics import samples
    from agentd.protocol import jobs, messages

    found = []
    for module in (messages, jobs, samples):
        for _, cls in sorted(vars(module).items()):
            if isinstance(cls, type) and issubclass(cls, msgspec.Struct) and cls.__module__ == module.__name__:
                if cls.__name__.startswith("Derived"):
                    continue  # computed by clients, never on the wire
                for f in msgspec.structs.fields(cls):
                    t = f.type
                    if typing.get_origin(t) is dict and typing.get_args(t)[0] is int:
                        found.append(f"`{cls.__name__}.{f.encode_name}`")
    return found


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


def plain_doc(cls: type) -> str:
    """A command's documentation (its docstring, as in this page) as plain text for a terminal:
    no code markup. agentctl's verb descriptions come from here."""
    return _doc(cls).replace("``", "").replace("`", "")


def summary(cls: type) -> str:
    """What a command does, in one clause: its docstring up to the first ``.``, ``;`` or ``:``
    outside parentheses, as plain text. agentctl's verb list shows it."""
    text, depth = plain_doc(cls), 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and ch in ".;:" and (i + 1 == len(text) or text[i + 1] == " "):
            text = text[:i]
            break
    return text[:1].lower() + text[1:]


def render() -> str:
    caps = "\n".join(f"| `{name}` | {meaning} |" for name, meaning in CAPABILITIES.items())
    out = [INTRO.replace("{INT_KEYS}", ", ".join(_int_key_fields())).replace("{CAPS}", caps)]
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
    for stream_cls, topic in TOPICS.items():
        out.append(f"### `{stream_cls.__struct_config__.tag}` (topic `{topic.decode()}`)\n\n{_doc(stream_cls)}\n")
        out += ["| field | type | default |", "|---|---|---|", *_fields(stream_cls, ("v", "node", "seq", "epoch")), ""]
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
