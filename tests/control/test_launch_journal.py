"""kill -9 of agentd at any moment of a launch never runs a job twice, and never loses it."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from agentd.protocol import JobSpec
from agentd.protocol.messages import Submit
from agentd.transport.client import ClientError
from tests.control.durability_helpers import cancel_everything, daemon, jobs, kill_pids, wait_until

TRIALS = 12
JOBS_PER_TRIAL = 3


def _starter(record: Path) -> list[str]:
    """A job that appends its pid to ``record`` once when it starts, then sleeps."""
    return ["/bin/sh", "-c", f'echo $$ >> "{record}"; exec sleep 120']


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_sigkill_during_launches_starts_each_job_exactly_once(tmp_path):
    rng = random.Random(11)
    state, records = tmp_path / "state", tmp_path / "records"
    records.mkdir()
    all_pids: list[int] = []
    proc = daemon(state, gpus=0)
    proc.start()
    try:
        for trial in range(TRIALS):
            first_done = threading.Event()

            def burst(t: int = trial, first_done: threading.Event = first_done) -> None:
                try:
                    with proc.client(timeout_s=5) as c:
                        for i in range(JOBS_PER_TRIAL):
                            c.call(Submit(spec=JobSpec(argv=_starter(records / f"{t}-{i}"), name=f"{t}-{i}")))
                            first_done.set()
                except ClientError:
                    pass  # the daemon died under us: that is the point
                finally:
                    first_done.set()

            th = threading.Thread(target=burst)
            th.start()
            # Kill while the next launches are under way: from the first answered submit on (a
            # slow connect on a loaded host must not let the kill land before any submit), at a
            # random point; a shim start takes ~30-100 ms, so this hits every phase.
            first_done.wait(10)
            time.sleep(rng.uniform(0.0, 0.35))
            proc.kill9()
            th.join(10)
            proc.start()  # same state dir, same ports: re-adopts and finishes the launches
        # Settle: every job the daemon knows runs, and has written its pid.
        def settled() -> bool:
            listed = jobs(proc)
            return all(j.state == "running" and _lines(records / j.spec.name) for j in listed.values())
        wait_until(settled, 30, "every job to run after the last restart")
        time.sleep(1.0)  # a second start of any job (an orphaned launch) would show by now
        listed = {j.spec.name: j for j in jobs(proc).values()}
        counts = {f.name: _lines(f) for f in records.iterdir()}
        all_pids = [int(p) for lines in counts.values() for p in lines]
        doubled = {name: pids for name, pids in counts.items() if len(pids) > 1}
        assert not doubled, f"jobs started more than once: {doubled}"
        # Nothing lost either: a job that started is one the daemon knows and runs.
        unknown = {name for name, pids in counts.items() if pids and name not in listed}
        assert not unknown, f"jobs ran but agentd does not know them: {unknown}"
        assert all(len(counts.get(name, [])) == 1 for name in listed), "a known job never started"
        assert len(listed) >= TRIALS, "too few submits got through to exercise the launch"
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            cancel_everything(proc)
        proc.stop(cancel_jobs=False)
        kill_pids(all_pids + [int(p) for f in records.iterdir() for p in _lines(f)])
