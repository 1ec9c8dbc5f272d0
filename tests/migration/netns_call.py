"""Send one request to an agentd and print the reply as JSON (run inside a netns).

usage: netns_call.py ENDPOINT SERVER_KEY KEYS_DIR REQUEST_JSON
"""

import sys
from pathlib import Path
from typing import Union

import msgspec

import agentd.protocol.migration  # noqa: F401  (registers the migrate_* commands)
from agentd.protocol.messages import COMMANDS
from agentd.transport.client import NodeClient, RemoteError, Unreachable

endpoint, server_key, keys_dir, body = sys.argv[1:5]
req = msgspec.json.decode(body, type=Union[tuple(COMMANDS.values())])  # noqa: UP007 - built from a runtime tuple
try:
    with NodeClient(endpoint, server_key=server_key, keys_dir=Path(keys_dir), timeout_s=3.0, actor="test") as c:
        reply = c.call(req)
    print(msgspec.json.encode({"ok": True, "reply": reply}).decode())
except (RemoteError, Unreachable) as exc:
    print(msgspec.json.encode({"ok": False, "error": str(exc), "code": getattr(exc, "code", 0)}).decode())
