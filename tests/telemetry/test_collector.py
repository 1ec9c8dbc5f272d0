"""NodeCollector: inventory, samples, jobs with GPU shares, scan cadence, isolation of failures."""

from __future__ import annotations

import logging

import msgspec

from agentd.metrics.samples import NodeSample
from agentd.telemetry.cgroup_paths import CgroupRef
from agentd.telemetry.collector import NodeCollector

GiB = 1024**3


class Clock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _fixture_collector(data_dir, fake_nvml, mono=None):
    return NodeCollector(
        "gpu-a", proc_root=str(data_dir / "proc"), sys_root=str(data_dir / "sys"),
        cgroup_root=str(data_dir / "cgroup_v2"), nvml=fake_nvml, mono=mono or Clock(), wall=lambda: 1.7e9,
    )


def test_inventory_on_fixture_tree(data_dir, fake_nvml):
    fake_nvml.configure(gpu_count=2)
    c = _fixture_collector(data_dir, fake_nvml)
    inv = c.inventory()
    assert (inv.node, inv.hostname, inv.cpu_model, inv.cpu_count) == ("gpu-a", "fixture-host", "Fixture CPU @ 3.00GHz", 2)
    assert (inv.kernel, inv.boot_time_s, inv.cgroup_mode) == ("6.1.0-fixture", 1700000000.0, "v2")
    assert (inv.gpu_backend, inv.gpu_status, len(inv.gpus), len(inv.gpu_links)) == ("nvml", "ok", 2, 1)
    assert inv.agentd_version
    c.close()


def test_sample_fills_jobs_with_gpu_share(data_dir, fake_nvml):
    # pid 101 is in job-1's cgroup (not passed by the daemon); 4242 is passed directly.
    fake_nvml.configure(gpu_count=2, processes={0: [(101, 5 * GiB, 40)], 1: [(4242, 1 * GiB, 10), (9, GiB, 1)]})
    c = _fixture_collector(data_dir, fake_nvml)
    ref = CgroupRef(version=2, paths={"unified": str(data_dir / "cgroup_v2" / "fleet" / "job-1")})
    s = c.sample({"job-1": (ref, [4242]), "bare": (None, [1, 999999])})
    assert (s.node, s.mono_s, s.wall_s, s.boot_id) == ("gpu-a", 100.0, 1.7e9, c.boot_id)
    jobs = {j.job_id: j for j in s.jobs}
    assert jobs["job-1"].gpu_mem_bytes == {0: 5 * GiB, 1: 1 * GiB}
    assert jobs["job-1"].gpu_sm_pct == {0: 40.0, 1: 10.0}
    assert jobs["job-1"].cpu_usage_us == 5000000 and jobs["job-1"].frozen
    assert jobs["bare"].pids_current == 1 and jobs["bare"].gpu_mem_bytes == {}
    procs = {p.pid: p for p in s.procs}
    assert procs[4242].gpu_mem_bytes == GiB
    # the sample survives the wire
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(s), type=NodeSample) == s
    c.close()


def test_process_scan_every_k_seconds(data_dir, fake_nvml):
    clock = Clock(0.0)
    c = _fixture_collector(data_dir, fake_nvml, mono=clock)
    had = []
    for t in (0.0, 1.0, 2.0, 4.9, 5.0, 6.0, 10.0):
        clock.t = t
        had.append(bool(c.sample().procs))
    assert had == [True, False, False, False, True, False, True]


def test_boot_id_stable_per_collector(fake_nvml):
    a, b = NodeCollector("n", nvml=fake_nvml), NodeCollector("n", nvml=fake_nvml)
    assert a.sample().boot_id == a.sample().boot_id == a.boot_id != b.boot_id
    a.close(), b.close()


def test_failing_backend_isolated_and_logged_once(data_dir, fake_nvml, caplog, monkeypatch):
    fake_nvml.configure(gpu_count=1)
    c = _fixture_collector(data_dir, fake_nvml)

    def broken():
        raise RuntimeError("host reader broke")

    monkeypatch.setattr(c._host, "read", broken)
    with caplog.at_level(logging.ERROR, logger="agentd.telemetry.collector"):
        samples = [c.sample() for _ in range(3)]
    assert all(len(s.gpus) == 1 and s.gpus[0].sm_util_pct == 50.0 for s in samples)
    assert samples[-1].host.mem_total_bytes == 0
    assert len([r for r in caplog.records if "reading host failed" in r.getMessage()]) == 1
    c.close()


def test_simulated_gpus_and_set_load(fake_nvml):
    c = NodeCollector("demo", simulate_gpus=2)
    inv = c.inventory()
    assert (inv.gpu_backend, inv.gpu_status) == ("simulated", "simulated")
    assert all(g.simulated for g in inv.gpus) and len(inv.gpu_links) == 1
    assert c.simulated_gpus is not None
    c.simulated_gpus.set_load(1, True, [777])
    s = c.sample({"j": (None, [777])})
    assert s.jobs[0].gpu_mem_bytes.keys() == {1} and s.jobs[0].gpu_mem_bytes[1] > 10 * GiB
    assert NodeCollector("x", nvml=fake_nvml).simulated_gpus is None
    c.close()


def test_failing_gpu_backend_leaves_host_and_jobs(data_dir, fake_nvml, monkeypatch):
    fake_nvml.configure(gpu_count=2)
    c = _fixture_collector(data_dir, fake_nvml)

    def lost():
        raise OSError("GPU fell off the bus")

    monkeypatch.setattr(c._gpu, "sample", lost)
    s = c.sample({"bare": (None, [1])})
    assert s.gpus == [] and s.host.mem_total_bytes == 16000000 * 1024 and s.jobs[0].pids_current == 1
    c.close()
