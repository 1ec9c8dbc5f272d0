"""agentctl keys: CURVE key pairs for clients and the authorized-keys directory of a daemon."""

from __future__ import annotations

import argparse
import os
import pwd
import re
from pathlib import Path

from agentd.cli.common import CliError, Verbs, emit_json
from agentd.transport.auth import (
    ROLES,
    client_keys_dir,
    load_or_create_keypair,
    load_public_key,
)

_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


def register(verbs: Verbs) -> None:
    """Add ``keys show`` and ``keys authorize``."""
    p = verbs.add("keys", help="CURVE keys: show this client's public key, authorize a client on a node")
    ks = verbs.group(p, "keys_verb")
    show = ks.add("show", help="print (creating on first use) this client's public key file")
    show.set_defaults(func=cmd_show)
    auth = ks.add("authorize", help="allow a client (or peer daemon) key on a node: run it on the node")
    auth.add_argument("--state-dir", required=True, help="the daemon's state dir")
    auth.add_argument("--role", choices=ROLES, default="viewer",
                      help="viewer: watch; user: submit and control own jobs; operator: control every job; "
                           "admin: also run jobs as others; daemon: a peer daemon (migrations only)")
    auth.add_argument("--user", metavar="UNIX_USER", default="",
                      help="the Unix user the key's holder acts as on this node (jobs run as that user); "
                           "without it the key cannot submit jobs")
    auth.add_argument("name", help="a name for the key holder (shown in the audit log)")
    auth.add_argument("keyfile", help="the client's public .key file")
    auth.set_defaults(func=cmd_authorize)


def cmd_show(args: argparse.Namespace) -> int:
    d = client_keys_dir()
    public, _ = load_or_create_keypair(d, "client")
    if args.json:
        emit_json({"public_key": public.decode(), "file": str(d / "client.key")})
    else:
        print(f"{d / 'client.key'}\n{public.decode()}")
    return 0


def cmd_authorize(args: argparse.Namespace) -> int:
    if not _NAME_RE.match(args.name):
        raise CliError(f"key name {args.name!r} may only use letters, digits and . _ @ - (at most 64)", 2)
    try:
        load_public_key(args.keyfile)
    except Exception as exc:  # noqa: BLE001 - any failure means the same to the user: not a key file
        raise CliError(f"{args.keyfile}: not a CURVE public key file ({exc})", 2) from None
    if args.user:
        try:
            pwd.getpwnam(args.user)
        except KeyError:
            raise CliError(f"--user {args.user!r}: no such user on this node; create it or pick an existing one", 2) from None
    public = load_public_key(args.keyfile).decode()
    dest = Path(args.state_dir) / "authorized_keys" / args.role
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest.parent, 0o700)
    meta = f'metadata\n    user = "{args.user}"\n' if args.user else "metadata\n"
    out = dest / f"{args.name}.key"
    out.write_text(f"#   fleetdeck authorized key {args.name} ({args.role})\n{meta}curve\n    public-key = \"{public}\"\n")
    as_user = f", acting as Unix user {args.user}" if args.user else ""
    print(f"authorized {args.name} as {args.role}{as_user}: {out}")
    return 0
