"""Evidence about one rank, captured on the node that runs it, saved as JSON in the job's dir.

What a person debugging a straggler or a hang wants first: where each process of the rank is
(its Python stack from ``py-spy dump`` where py-spy is installed, else every thread's kernel
stack, wait channel and state from /proc, which needs no help from the job), its GPUs' clocks and
throttle reasons, and the last minute of its metrics (cgroup CPU time, reported app metrics,
GPU samples). Capturing never raises for a vanished process or an unreadable file: what could
not be read is said in the file, in words.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from agentd.kernel.files import read_text
from agentd.kernel.procfs import DEFAULT_PROC_ROOT, read_stat
from agentd.metrics.samples import NodeSample

PY_SPY_TIMEOUT_S = 10.0
MAX_PROCESSES = 16  # a rank's processes captured at most (a data-loader fan-out needs no more)
MAX_STACK_CHARS = 20_000
EVIDENCE_PREFIX = "evidence-"


def kernel_stacks(pid: int, proc_root: str = DEFAULT_PROC_ROOT) -> list[dict[str, str]]:
    """Every thread of ``pid``: tid, comm, state, wchan and kernel stack (``/proc/PID/task/TID/stack``
    needs root; without it the stack says so). Empty when the process is gone."""
    task_dir = Path(proc_root) / str(pid) / "task"
    try:
        tids = sorted(int(t) for t in os.listdir(task_dir) if t.isdigit())
    except OSError:
        return []
    out: list[dict[str, str]] = []
    for tid in tids:
        where = f"{pid}/task/{tid}"
        st = read_stat(where, proc_root)
        stack = read_text(task_dir / str(tid) / "stack")
        out.append({"tid": str(tid), "comm": st.comm if st else "?", "state": st.state if st else "?",
                    "wchan": (read_text(task_dir / str(tid) / "wchan") or "").strip() or "0",
                    "kernel_stack": (stack or "(unreadable: needs root, or the thread ended)")[:MAX_STACK_CHARS]})
    return out


def py_spy_dump(pid: int, py_spy: str | None = None) -> str | None:
    """``py-spy dump --pid PID`` output, or None when py-spy is missing or failed (not Python, no rights)."""
    exe = py_spy or shutil.which("py-spy")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "dump", "--pid", str(pid)], capture_output=True, text=True,
                              timeout=PY_SPY_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout[:MAX_STACK_CHARS] if done.returncode == 0 and done.stdout.strip() else None


def gpu_state(samples: Sequence[NodeSample], gpus: Sequence[int]) -> list[dict[str, Any]]:
    """The newest sample's clocks, power, utilisation and throttle reasons of ``gpus``."""
    if not samples:
        return []
    newest = samples[-1]
    return [{"index": g.index, "sm_clock_mhz": g.sm_clock_mhz, "mem_clock_mhz": g.mem_clock_mhz,
             "power_mw": g.power_mw, "power_limit_mw": g.power_limit_mw, "sm_util_pct": g.sm_util_pct,
             "temp_c": g.temp_c, "throttle_reasons": g.throttle_reasons}
            for g in newest.gpus if g.index in gpus]


def metrics_of(samples: Sequence[NodeSample], job_id: str, gpus: Sequence[int]) -> list[dict[str, Any]]:
    """Per sample: wall time, the job's cgroup counters, its app metrics and its GPUs' samples."""
    out: list[dict[str, Any]] = []
    for s in samples:
        cg = next((c for c in s.jobs if c.job_id == job_id), None)
        out.append({"wall_s": s.wall_s,
                    "cgroup": msgspec.to_builtins(cg) if cg is not None else None,
                    "app": {m.name: m.value for m in s.app if m.job_id == job_id},
                    "gpus": [msgspec.to_builtins(g) for g in s.gpus if g.index in gpus]})
    return out


def capture(job_id: str, pids: Sequence[int], gpus: Sequence[int], samples: Sequence[NodeSample],
            job_dir: Path, reason: str = "", proc_root: str = DEFAULT_PROC_ROOT,
            py_spy: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Capture the evidence about ``job_id`` and write it to ``job_dir/evidence-WALLMS.json``.

    ``samples``: this node's recent samples (the caller keeps the last minute). Returns the file's
    path and a short summary (what kind of stacks were taken, for how many processes and threads).
    Raises OSError when the file cannot be written."""
    processes: list[dict[str, Any]] = []
    for pid in list(pids)[:MAX_PROCESSES]:
        st = read_stat(pid, proc_root)
        if st is None:
            continue
        dump = py_spy_dump(pid, py_spy)
        entry: dict[str, Any] = {"pid": pid, "comm": st.comm, "state": st.state}
        if dump is not None:
            entry["py_spy"] = dump
        entry["threads"] = kernel_stacks(pid, proc_root)
        processes.append(entry)
    wall = time.time()
    doc = {"job_id": job_id, "captured_wall_s": wall, "reason": reason,
           "stack_source": "py-spy" if any("py_spy" in p for p in processes) else "kernel",
           "processes": processes, "gpus": gpu_state(samples, gpus),
           "metrics": metrics_of(samples, job_id, gpus)}
    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / f"{EVIDENCE_PREFIX}{int(wall * 1000)}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)
    summary = {"stack_source": doc["stack_source"], "processes": len(processes),
               "threads": sum(len(p["threads"]) for p in processes), "metric_samples": len(samples)}
    return path, summary
