#!/usr/bin/env python3
"""An LLM-agent-like job for agentd: think (CPU), emit tokens, call tools with bursty memory.

Each turn it "thinks" (CPU work), reports tokens (a counter), then runs a tool as a child process
through ``report.run_tool`` (its own cgroup, so CPU and peak memory belong to the tool call) or,
every third turn, an in-process step inside ``report.tool_call``.

    python examples/agent_sim.py --turns 50 --think-s 0.3 --tool-mem-mb 128
"""

from __future__ import annotations

import argparse
import random
import sys
import time

try:
    from agentd import report
except ImportError:
    report = None  # type: ignore[assignment]

TOOLS = ("pytest", "grep", "compile", "search")
# A tool: allocate and touch MEM MiB, hold it for a while, burn some CPU.
TOOL_CODE = ("import sys,time\nmb=float(sys.argv[1]); s=float(sys.argv[2])\nb=bytearray(int(mb*1048576))\n"
             "for i in range(0,len(b),4096): b[i]=1\nend=time.time()+s\nx=0\nwhile time.time()<end: x+=1\n")


STREAM_SLICES = 8


def think(seconds: float) -> int:
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += sum(i * i for i in range(500))
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--turns", type=int, default=20, help="agent turns (default 20; 0 = forever)")
    p.add_argument("--think-s", type=float, default=0.2, help="CPU seconds per turn (default 0.2)")
    p.add_argument("--tool-mem-mb", type=float, default=64, help="peak memory of a tool call (default 64)")
    p.add_argument("--tool-s", type=float, default=0.2, help="seconds per tool call (default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rnd = random.Random(args.seed)
    turn = 0
    while args.turns == 0 or turn < args.turns:
        turn += 1
        # Tokens stream out while the model "thinks", as a real LLM decodes, so throughput
        # charts show a rate during generation and 0 while the agent waits on a tool.
        tokens = rnd.randint(200, 800)
        for k in range(STREAM_SLICES):
            think(args.think_s / STREAM_SLICES)
            if report is not None:
                report.counter(tokens=tokens // STREAM_SLICES + (tokens % STREAM_SLICES if k == 0 else 0))
        tool = rnd.choice(TOOLS)
        print(f"AGENTD_METRIC turn={turn}", flush=True)
        mem = args.tool_mem_mb * rnd.uniform(0.5, 1.0)
        if turn % 3 == 0:
            if report is not None:
                with report.tool_call(tool):
                    think(args.tool_s / 2)
            else:
                think(args.tool_s / 2)
        else:
            cmd = [sys.executable, "-c", TOOL_CODE, str(mem), str(args.tool_s)]
            if report is not None:
                rc = report.run_tool(cmd, name=tool)
            else:
                import subprocess

                rc = subprocess.call(cmd)
            if rc != 0:
                print(f"tool {tool} failed with {rc}", file=sys.stderr, flush=True)
    print(f"done turns={turn}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
