"""Report a job's own metrics and tool calls to agentd (stdlib only; a no-op outside agentd).

    from agentd import report
    report.metric(loss=0.31, step=1200)        # gauges: latest value shown
    report.counter(tokens=1234, samples=56)    # increments of running totals (rates derived)
    with report.tool_call("pytest"):           # an agent's tool call: start, end, CPU seconds
        ...
    rc = report.run_tool(["pytest", "-q"])     # runs it in its own child cgroup: CPU and peak memory

Messages are JSON datagrams on the unix socket named by ``AGENTD_REPORT``, sent without blocking:
if agentd is gone or busy the message is dropped and the job carries on. Programs in any language
can print ``AGENTD_METRIC name=value ...`` and ``AGENTD_TOOL start NAME`` / ``AGENTD_TOOL end NAME``
lines on stdout instead. Names listed in the spec's ``counters`` (env ``AGENTD_COUNTERS``) are
counters when sent through ``metric()`` too; then send the running total.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import resource
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agentd.kernel import cgroupfs
from agentd.kernel.files import read_int, read_keyed

ENV_REPORT = "AGENTD_REPORT"
ENV_JOB_ID = "AGENTD_JOB_ID"
ENV_COUNTERS = "AGENTD_COUNTERS"
ENV_CGROUP_DIRS = "AGENTD_CGROUP_DIRS"

_lock = threading.Lock()
_sock: socket.socket | None = None
_totals: dict[str, float] = {}
_ids = itertools.count(1)


def enabled() -> bool:
    """True when running under agentd (there is somewhere to report to)."""
    return bool(os.environ.get(ENV_REPORT) and os.environ.get(ENV_JOB_ID))


def _send(msg: dict[str, Any]) -> bool:
    """Send one message without blocking; False when it was dropped."""
    global _sock
    path = os.environ.get(ENV_REPORT)
    job = os.environ.get(ENV_JOB_ID)
    if not path or not job:
        return False
    msg["job"] = job
    msg.setdefault("wall_s", time.time())
    try:
        data = json.dumps(msg).encode()
        with _lock:
            if _sock is None:
                _sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                _sock.setblocking(False)
            _sock.sendto(data, path)
        return True
    except (OSError, TypeError, ValueError):
        return False  # daemon gone, queue full or a value that is not a number: never the job's problem


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in values.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def metric(**values: float) -> bool:
    """Report gauges (latest value wins), e.g. ``metric(loss=0.3, step=12)``."""
    declared = set(filter(None, os.environ.get(ENV_COUNTERS, "").split(",")))
    nums = _numbers(values)
    return _send({"t": "metric", "values": nums, "counters": sorted(declared & nums.keys())})


def counter(**increments: float) -> bool:
    """Add to running totals (``counter(tokens=120)`` adds 120) and report the totals."""
    nums = _numbers(increments)
    with _lock:
        for k, v in nums.items():
            _totals[k] = _totals.get(k, 0.0) + v
        totals = {k: _totals[k] for k in nums}
    return _send({"t": "metric", "values": totals, "counters": sorted(totals)})


def _cpu_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@contextlib.contextmanager
def tool_call(name: str) -> Iterator[None]:
    """Mark a tool call of an agent; CPU seconds are this process's and its waited children's."""
    call_id = f"{os.getpid()}-{next(_ids)}"
    cpu0 = _cpu_s()
    _send({"t": "tool", "phase": "start", "name": name, "id": call_id})
    exit_code: int | None = 0
    try:
        yield
    except BaseException:
        exit_code = 1
        raise
    finally:
        _send({"t": "tool", "phase": "end", "name": name, "id": call_id, "exit_code": exit_code,
               "cpu_s": round(_cpu_s() - cpu0, 6)})


def _job_cgroup_dirs() -> list[Path]:
    return [Path(p) for p in os.environ.get(ENV_CGROUP_DIRS, "").split(os.pathsep) if p]


def _make_tool_cgroups(tag: str) -> list[Path]:
    made: list[Path] = []
    for base in _job_cgroup_dirs():
        d = base / tag
        try:
            d.mkdir()
            made.append(d)
        except OSError:
            continue
    return made


def _tool_usage(dirs: list[Path]) -> tuple[float | None, int | None]:
    """CPU seconds and peak memory bytes of a tool cgroup (v1 or v2 files, whichever exist)."""
    cpu_s: float | None = None
    peak: int | None = None
    for d in dirs:
        ns = read_int(d / "cpuacct.usage")  # v1
        cpu_s = ns / 1e9 if ns is not None else cpu_s
        usec = read_keyed(d / "cpu.stat").get("usage_usec")  # v2
        if usec is not None and cpu_s is None:
            cpu_s = usec / 1e6
        for name in ("memory.max_usage_in_bytes", "memory.peak"):
            v = read_int(d / name)
            if v is not None:
                peak = max(peak or 0, v)
    return cpu_s, peak


def _remove_tool_cgroups(dirs: list[Path]) -> None:
    for d in dirs:
        for _ in range(50):
            for pid in cgroupfs.procs(d) or ():  # a tool's stray children must not keep the cgroup alive
                with contextlib.suppress(OSError):
                    os.kill(pid, 9)
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.01)


def run_tool(argv: Sequence[str], name: str | None = None, *, timeout_s: float | None = None,
             **popen_kwargs: Any) -> int:
    """Run a tool as a child process in its own child cgroup of the job's; returns its exit code.

    The tool call is reported with its CPU seconds and peak memory. Outside agentd, or where the
    job's cgroup is not writable, the tool still runs (its usage then comes from rusage).
    """
    tool = name or Path(argv[0]).name
    call_id = f"{os.getpid()}-{next(_ids)}"
    dirs = _make_tool_cgroups(f"tool-{call_id}") if enabled() else []
    procs = [str(d / "cgroup.procs") for d in dirs]

    def enter_cgroup() -> None:  # runs in the child between fork and exec
        me = str(os.getpid())
        for p in procs:
            try:
                with open(p, "w") as f:
                    f.write(me)
            except OSError:
                pass

    _send({"t": "tool", "phase": "start", "name": tool, "id": call_id})
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    exit_code = -1
    try:
        proc = subprocess.Popen(list(argv), preexec_fn=enter_cgroup if procs else None, **popen_kwargs)
        try:
            exit_code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            exit_code = proc.wait()
        return exit_code
    finally:
        cpu_s, peak = _tool_usage(dirs)
        if cpu_s is None:
            kids = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu_s = (kids.ru_utime + kids.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
            peak = peak if peak is not None else kids.ru_maxrss * 1024 or None
        _remove_tool_cgroups(dirs)
        end: dict[str, Any] = {"t": "tool", "phase": "end", "name": tool, "id": call_id, "exit_code": exit_code,
                               "cpu_s": round(cpu_s, 6)}
        if peak is not None:
            end["mem_peak_bytes"] = peak
        _send(end)
