"""Hostile requests against a real agentd: fuzz, framing garbage, oversized objects, NaN,
slow cancels, path names from clients. Each test records attack -> result -> RSS growth."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentd.protocol import COMMANDS, MAX_MESSAGE_BYTES
from agentd.protocol.limits import MAX_ARGV_ITEMS, MAX_GRACE_S, MAX_LISTED_JOB_BYTES, MAX_NAME_CHARS
from tests.security.conftest import record, rss_kib, wait_for

PY = sys.executable
HOSTILE_VALUES = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -1, 0, 1e9]),
    st.text(max_size=64),
    st.sampled_from(["/", "/etc", "../../..", "..", ".", "a/b", "\x00", "\x1b[2J", "x" * 70_000]),
    st.binary(max_size=64),
    st.lists(st.text(max_size=8), max_size=8),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4),
)


def _request(cmd: str) -> st.SearchStrategy[dict]:
    fields = [f.encode_name for f in msgspec.structs.fields(COMMANDS[cmd]) if f.name not in ("v", "id")]
    spec_fields = ["argv", "name", "cwd", "env", "gpus", "cpus", "memory_bytes", "priority", "checkpoint",
                   "labels", "counters", "shell", "user", "kind"]
    spec = st.fixed_dictionaries({}, optional=dict.fromkeys(spec_fields, HOSTILE_VALUES))
    values = {k: (st.one_of(spec, HOSTILE_VALUES) if k == "spec" else HOSTILE_VALUES) for k in fields}
    return st.fixed_dictionaries({"cmd": st.just(cmd), "v": st.just(1), "id": st.integers(0, 1 << 31)},
                                 optional=values)


def test_fuzz_every_request_type(hostile_agentd, raw_factory):
    """Every command with hostile field values: one reply each (ok or an error naming a
    field), the daemon stays up, answers hello, and its RSS stays bounded."""
    raw = raw_factory(hostile_agentd.ctl)
    raw.call({"cmd": "hello"})
    before = rss_kib(hostile_agentd.pid)
    seen: dict[str, int] = {}

    @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(sorted(COMMANDS)).flatmap(_request))
    def one(req: dict) -> None:
        raw.send(req)
        reply = raw.recv(timeout_s=20)
        assert reply.get("id") in (req["id"], 0)
        if reply.get("ok") is False:
            assert reply["code"] in (400, 401, 404, 405, 409, 413, 422, 426, 500, 503), reply
            assert reply["message"]
        seen[req["cmd"]] = seen.get(req["cmd"], 0) + 1

    for _ in range(4):  # 100 requests over every command
        one()
    hello = raw.call({"cmd": "hello"})
    assert hello["ok"] and hello["node"] == "sec"
    assert hostile_agentd.proc.poll() is None
    record(f"hypothesis fuzz: {sum(seen.values())} requests over {len(seen)} commands, hostile field values",
           "each answered (error names the field); hello still answered", before, rss_kib(hostile_agentd.pid))


def test_framing_garbage(hostile_agentd, raw_factory):
    raw = raw_factory(hostile_agentd.ctl)
    before = rss_kib(hostile_agentd.pid)
    garbage = [b"", b"\xc1", b"\xff" * 100, os.urandom(4096), msgspec.msgpack.encode([1, 2, 3]),
               msgspec.msgpack.encode({"v": 1}), msgspec.msgpack.encode({"v": 1, "cmd": 5}),
               msgspec.msgpack.encode({"v": 99, "cmd": "hello"}), b"\x91" * 5000 + b"\xc0",
               msgspec.msgpack.encode({"v": 1, "cmd": "nope"})]
    for body in garbage:
        raw.send(body)
        reply = raw.recv()
        assert reply["ok"] is False and reply["code"] in (400, 405, 426), (body[:20], reply)
    for _ in range(50):  # multipart messages a DEALER never sends: dropped, not answered
        raw.send([b"a", b"b", b"c"])
    hello = raw.call({"cmd": "hello"})
    assert hello["ok"]
    record("framing garbage: empty, invalid msgpack, deep nesting, wrong types, 50 stray multiparts",
           "an error reply each (400/405/426), multiparts dropped; hello answered", before, rss_kib(hostile_agentd.pid))


def test_oversized_objects_refused_naming_field_and_limit(hostile_agentd, raw_factory):
    raw = raw_factory(hostile_agentd.ctl)
    before = rss_kib(hostile_agentd.pid)
    many = raw.call({"cmd": "submit", "spec": {"argv": ["true"] * 1_000_000}})
    assert many["ok"] is False and many["field"] == "spec.argv" and str(MAX_ARGV_ITEMS) in many["message"]
    huge_name = raw.call({"cmd": "submit", "spec": {"argv": ["true"], "name": "n" * 1_000_000}})
    assert huge_name["ok"] is False and huge_name["field"] == "spec.name" and str(MAX_NAME_CHARS) in huge_name["message"]
    fat_argv = raw.call({"cmd": "submit", "spec": {"argv": ["true", "a" * 200_000, "b" * 200_000]}})
    assert fat_argv["ok"] is False and fat_argv["field"] == "spec.argv" and "bytes in total" in fat_argv["message"]
    env = raw.call({"cmd": "submit", "spec": {"argv": ["true"], "env": {f"V{i}": "x" for i in range(5000)}}})
    assert env["ok"] is False and env["field"] == "spec.env"
    assert raw.call({"cmd": "hello"})["ok"]
    # a frame over the limit: the socket (ZMQ_MAXMSGSIZE) drops that connection unread
    flood = raw_factory(hostile_agentd.ctl)
    flood.send({"v": 1, "cmd": "submit", "spec": {"argv": ["true"], "name": "x" * (MAX_MESSAGE_BYTES + 10)}})
    assert raw_factory(hostile_agentd.ctl).call({"cmd": "hello"})["ok"]
    record("submit with 1,000,000 argv items / a 1 MB name / 400 KB of argv / 5,000 env vars / a 9 MB frame",
           "refused: 400 naming spec.argv / spec.name / spec.env and the limit; the 9 MB frame's connection dropped", before,
           rss_kib(hostile_agentd.pid))


def test_nan_and_inf_refused_and_queue_keeps_moving(hostile_agentd, raw_factory):
    raw = raw_factory(hostile_agentd.ctl)
    before = rss_kib(hostile_agentd.pid)
    for field, value in (("cpus", float("nan")), ("cpus", float("inf")), ("memory_bytes", -1),
                         ("priority", 99), ("gpus", -1)):
        reply = raw.call({"cmd": "submit", "spec": {"argv": ["true"], field: value}})
        assert reply["ok"] is False and reply["field"] == f"spec.{field}", reply
    ckpt = raw.call({"cmd": "submit", "spec": {"argv": ["true"], "checkpoint": {"timeout_s": float("nan")}}})
    assert ckpt["ok"] is False and ckpt["field"] == "spec.checkpoint.timeout_s"
    ok = raw.call({"cmd": "submit", "spec": {"argv": ["true"]}})
    assert ok["ok"], ok
    job_id = ok["job"]["id"]
    wait_for(lambda: raw.call({"cmd": "show", "job": job_id})["job"]["state"] == "succeeded", 30, "the next job to run")
    record("submit with cpus=NaN/inf, negative memory, priority 99, gpus -1, checkpoint timeout NaN",
           "refused naming the field; the next job runs", before, rss_kib(hostile_agentd.pid))


def test_slow_cancels_never_starve_control(hostile_agentd, raw_factory):
    """grace_s=1e9 is refused; 8 cancels with the longest grace of jobs that ignore SIGTERM
    leave jobs/submit/pause answering, and SIGTERM still stops agentd."""
    main = raw_factory(hostile_agentd.ctl)
    before = rss_kib(hostile_agentd.pid)
    refused = main.call({"cmd": "cancel", "job": "sec.1", "grace_s": 1e9})
    assert refused["ok"] is False and refused["field"] == "grace_s" and str(int(MAX_GRACE_S)) in refused["message"]
    stubborn = ["sh", "-c", "trap '' TERM; while :; do sleep 1; done"]
    ids = [main.call({"cmd": "submit", "spec": {"argv": stubborn}})["job"]["id"] for _ in range(8)]
    gpu_job = main.call({"cmd": "submit", "spec": {"argv": ["sleep", "600"], "gpus": 2}})["job"]["id"]
    wait_for(lambda: all(j["state"] == "running" and j.get("pids")
                         for j in main.call({"cmd": "jobs", "active_only": True})["jobs"]), 30, "9 running jobs")
    cancellers = [raw_factory(hostile_agentd.ctl) for _ in ids]
    for c, job_id in zip(cancellers, ids):
        c.send({"v": 1, "id": 1, "cmd": "cancel", "job": job_id, "grace_s": MAX_GRACE_S})
    time.sleep(0.5)  # the cancels are in the daemon now
    t0 = time.monotonic()
    jobs = main.call({"cmd": "jobs"}, timeout_s=8)
    # queued behind gpu_job: a submit that needs no launch (a launch has its own 10 s bound)
    other = main.call({"cmd": "submit", "spec": {"argv": ["sleep", "60"], "gpus": 1}}, timeout_s=8)
    assert jobs["ok"] and other["ok"], (jobs, other)
    paused = main.call({"cmd": "pause", "job": gpu_job}, timeout_s=8)
    # answered in time; a paused job, or a refusal when its launch failed on a loaded machine
    assert (paused["ok"] and paused["job"]["state"] == "paused") or paused["code"] == 409, paused
    answered_s = time.monotonic() - t0
    replies = [c.recv(timeout_s=20) for c in cancellers]  # each answers within the 10 s reply wait
    assert all(r["ok"] for r in replies), replies
    assert all(r["job"]["state"] in ("running", "paused") for r in replies)
    assert all("SIGKILL in" in (r.get("message") or "") or "cancelled by" in r["job"].get("reason", "") for r in replies)
    hostile_agentd.proc.send_signal(signal.SIGTERM)
    code = hostile_agentd.proc.wait(20)
    assert code == 0
    record("8 cancels with grace_s=3600 of jobs ignoring SIGTERM (grace_s=1e9 refused)",
           f"jobs/submit/pause answered in {answered_s:.1f} s; cancels reply within 10 s; SIGTERM stops agentd",
           before, before)


def test_jobs_and_snapshot_replies_fit_the_frame_limit(hostile_agentd, raw_factory):
    """40 unfinished jobs of ~250 KiB each (10 MiB in all) and ended ones: every reply fits,
    every unfinished job is listed, the big ones in short form."""
    raw = raw_factory(hostile_agentd.ctl)
    before = rss_kib(hostile_agentd.pid)
    hold = raw.call({"cmd": "submit", "spec": {"argv": ["sleep", "120"], "gpus": 2}})
    assert hold["ok"], hold
    big_args = ["x" * 60_000 for _ in range(4)]
    for i in range(40):
        r = raw.call({"cmd": "submit", "spec": {"argv": ["sleep", *big_args], "gpus": 1, "name": f"big-{i}",
                                                "env": {"PAD": "y" * 4000}}})
        assert r["ok"], r
    for _ in range(3):  # ahead of the queued ones (the queue is strict)
        assert raw.call({"cmd": "submit", "spec": {"argv": ["true"], "priority": 5}})["ok"]
    jobs = wait_for(lambda: (r := raw.call({"cmd": "jobs"})) and sum(j["state"] == "succeeded" for j in r["jobs"]) == 3 and r,
                    30, "3 ended jobs")
    size = len(msgspec.msgpack.encode(jobs))
    assert size <= MAX_MESSAGE_BYTES
    unfinished = [j for j in jobs["jobs"] if j["state"] in ("queued", "running")]
    assert len(unfinished) == 41
    short = [j for j in unfinished if j.get("short")]
    assert len(short) == 40 and all(len(msgspec.msgpack.encode(j)) <= MAX_LISTED_JOB_BYTES for j in short)
    full = raw.call({"cmd": "show", "job": short[0]["id"]})
    assert full["job"]["spec"]["argv"][1:] == big_args
    snap = raw.call({"cmd": "snapshot", "history": 300})
    assert snap["ok"] and len(msgspec.msgpack.encode(snap)) <= MAX_MESSAGE_BYTES
    assert {j["id"] for j in unfinished} <= {j["id"] for j in snap["jobs"]}
    record("40 queued jobs of ~250 KiB each (10 MiB of specs) + ended jobs, then jobs and snapshot",
           f"jobs reply {size // 1024} KiB, snapshot fits; every unfinished job listed (large ones in short form)",
           before, rss_kib(hostile_agentd.pid))


def test_client_names_never_reach_a_path(hostile_agentd, raw_factory, tmp_path):
    """migrate_offer + migrate_abort with migration_id set to an absolute path, or one
    climbing out with '..', are refused; the directory survives."""
    victim = tmp_path / "victim"
    (victim / "inner").mkdir(parents=True)
    (victim / "inner" / "keep.txt").write_text("precious")
    raw = raw_factory(hostile_agentd.ctl)
    before = rss_kib(hostile_agentd.pid)
    climb = os.path.relpath(victim, hostile_agentd.state_dir / "migrations" / "incoming")
    for mid in (str(victim), climb, "..", ".", "a/../../b", "x\x00y"):
        offer = raw.call({"cmd": "migrate_offer", "migration_id": mid, "spec": {"argv": ["true"]},
                          "source_node": "evil", "source_job": "evil.1", "mode": "checkpoint",
                          "size_bytes": 10})
        assert offer["ok"] is False and offer["field"] == "migration_id", offer
        abort = raw.call({"cmd": "migrate_abort", "migration_id": mid})
        assert abort["ok"] is False and abort["field"] == "migration_id", abort
        for cmd in ("migrate_status", "migrate_commit"):
            r = raw.call({"cmd": cmd, "migration_id": mid})
            assert r["ok"] is False and r["field"] == "migration_id"
    for stream in ("../../etc/passwd", "/etc/passwd"):
        r = raw.call({"cmd": "logs", "job": "sec.1", "stream": stream})
        assert r["ok"] is False and r["field"] == "stream"
    for job in ("../../x", "sec./../../x", "/etc"):
        r = raw.call({"cmd": "show", "job": job})
        assert r["ok"] is False and r["code"] == 404
    assert (victim / "inner" / "keep.txt").read_text() == "precious"
    record("migrate_offer/abort/status/commit with migration_id = an absolute path or '..'; "
           "logs stream and job ids with '../'", "refused (400 migration_id / stream, 404 job); nothing deleted",
           before, rss_kib(hostile_agentd.pid))


def test_job_retention_forgets_ended_jobs(tmp_path, raw_factory):
    from tests.agentd_proc import start_agentd
    from tests.security.conftest import kill_jobs_of

    proc = start_agentd(tmp_path, node="ret", simulate_gpus=0, extra=["--job-retention", "2"])
    try:
        raw = raw_factory(proc.ctl)
        job = raw.call({"cmd": "submit", "spec": {"argv": ["true"]}})["job"]
        job_dir = proc.state_dir / "jobs" / job["id"].split(".")[1]
        wait_for(lambda: raw.call({"cmd": "show", "job": job["id"]})["job"]["state"] == "succeeded", 30, "the job to end")
        assert job_dir.is_dir()
        wait_for(lambda: raw.call({"cmd": "show", "job": job["id"]})["ok"] is False, 30, "the ended job to age out")
        assert not job_dir.exists()
        assert all(j["id"] != job["id"] for j in raw.call({"cmd": "jobs"})["jobs"])
        proc.stop()
        proc.start()
        raw2 = raw_factory(proc.ctl)
        assert raw2.call({"cmd": "show", "job": job["id"]})["ok"] is False  # gone from the store too
        new = raw2.call({"cmd": "submit", "spec": {"argv": ["true"]}})["job"]
        assert int(new["id"].split(".")[1]) > int(job["id"].split(".")[1])  # numbers never reused
    finally:
        kill_jobs_of(proc)
        proc.stop()


def test_concurrent_clients_keep_hello_answered(hostile_agentd, raw_factory):
    """Many clients each firing requests with oversized fields at once; hello stays answered."""
    before = rss_kib(hostile_agentd.pid)
    errors: list[str] = []

    def hammer() -> None:
        try:
            r = raw_factory(hostile_agentd.ctl)
            for i in range(20):
                r.send({"v": 1, "id": i, "cmd": "logs", "job": "sec.1", "max_bytes": 1 << 40})
                r.recv()
        except AssertionError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert raw_factory(hostile_agentd.ctl).call({"cmd": "hello"})["ok"]
    record("8 clients x 20 logs requests with max_bytes=2^40", "each refused naming max_bytes; hello answered",
           before, rss_kib(hostile_agentd.pid))
