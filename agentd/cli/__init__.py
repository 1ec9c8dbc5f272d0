"""agentctl: everything the app does, from a terminal and for scripts.

Exit codes: 0 success; 1 the action was refused or failed (the message says why);
2 usage error or unreachable node. ``--json`` output goes to stdout alone; progress to stderr.
Global options work on either side of the verb (``agentctl --json jobs`` == ``agentctl jobs --json``).
"""

from __future__ import annotations

import argparse
import json
import sys

from agentd import __version__
from agentd.cli import cluster, jobs, keys, nodes, radar, recording
from agentd.cli.common import (
    GLOBAL_DEFAULTS,
    CliError,
    Verbs,
    add_global_options,
    clean,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentctl",
        description="Control and watch Fleetdeck nodes (agentd) from a terminal.",
        epilog="Global options may be given before or after the verb.",
    )
    add_global_options(parser, suppress=False)
    parser.add_argument("--version", action="version", version=f"agentctl {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    common = argparse.ArgumentParser(add_help=False)
    add_global_options(common, suppress=True)
    verbs = Verbs(sub, common)
    for module in (nodes, jobs, recording, cluster, keys, radar):
        module.register(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for key, value in GLOBAL_DEFAULTS.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        if args.json and exc.code == EXIT_FAILED:
            print(json.dumps({"error": str(exc), "code": exc.remote_code}), file=sys.stdout)
        print(f"agentctl: {clean(exc)}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
