"""``python -m agentd.simulate K`` (or ``agentd --simulate-nodes K``): a SIMULATED fleet."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from agentd.simulate.runner import Fleet


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="agentd-simulate", description="Serve K SIMULATED nodes (real protocol, real "
                                "loopback sockets, nothing runs) for testing relays and the app at scale.")
    p.add_argument("k", type=int, metavar="K", help="how many simulated nodes")
    p.add_argument("--cluster-out", type=Path, metavar="FILE", help="write the fleet's cluster file here (else stdout)")
    p.add_argument("--prefix", default="sim", help="node names are PREFIX-0001... (default sim)")
    p.add_argument("--gpus", type=int, default=8, help="simulated GPUs per node (default 8)")
    p.add_argument("--role", choices=["viewer", "user", "operator", "admin"], default="operator",
                   help="the role every caller gets on the simulated nodes (default operator)")
    p.add_argument("--failures", type=float, default=0.0, metavar="P",
                   help="chance per node per tick that it dies for 5-20 s (default 0)")
    p.add_argument("--alert-rate", type=float, default=0.001, metavar="P",
                   help="chance per node per tick that a GPU starts a simulated throttling alert (default 0.001)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not 1 <= args.k <= 20000:
        print(f"agentd-simulate: K {args.k} is out of range; use 1 to 20000", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fleet = Fleet(args.k, prefix=args.prefix, gpus=args.gpus, role=args.role, seed=args.seed,
                  failures=args.failures, interval_s=args.interval, alert_rate=args.alert_rate)
    if args.cluster_out:
        fleet.write_cluster(args.cluster_out)
        print(f"agentd-simulate: {args.k} SIMULATED nodes; cluster file {args.cluster_out}", file=sys.stderr)
    else:
        sys.stdout.write(fleet.cluster_toml())
        sys.stdout.flush()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: fleet.stop())
    fleet.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
