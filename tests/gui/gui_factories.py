"""Hand-made protocol structs for the Qt-free state tests (no daemon needed)."""

from __future__ import annotations

from agentd.metrics.samples import (
    AppMetric,
    CgroupSample,
    CpuTimes,
    GpuInfo,
    GpuLink,
    GpuSample,
    HostSample,
    NetCounters,
    NodeInventory,
    NodeSample,
)
from agentd.protocol.jobs import JobInfo, JobSpec
from agentd.protocol.messages import SnapshotReply

GiB = 1024**3


def inventory(node: str = "n1", gpus: int = 2) -> NodeInventory:
    return NodeInventory(
        node=node, hostname=node, cpu_count=8, mem_total_bytes=64 * GiB, gpu_backend="simulated",
        gpus=[GpuInfo(index=i, name="Sim GPU", uuid=f"GPU-{node}-{i}", mem_total_bytes=80 * GiB, simulated=True) for i in range(gpus)],
        gpu_links=[GpuLink(a=0, b=1, kind="nvlink", links=4)] if gpus > 1 else [],
    )


def sample(node: str = "n1", t: float = 0.0, *, busy_s: float = 0.0, rx: int = 0, gpus: int = 2, util: float = 50.0,
           jobs: dict[str, int] | None = None, tokens: float | None = None, boot: str = "b1", nvlink: int = 0) -> NodeSample:
    """A sample at monotonic ``t``: ``busy_s`` cumulative CPU busy seconds (8 cores, so idle grows
    by 8*t - busy), ``rx`` cumulative bytes received on eth0, ``jobs`` job id -> cumulative CPU us."""
    host = HostSample(
        cpu_total=CpuTimes(user_s=busy_s, idle_s=8 * t - busy_s),
        mem_total_bytes=64 * GiB, mem_used_bytes=16 * GiB,
        net=[NetCounters(name="eth0", rx_bytes=rx), NetCounters(name="lo", rx_bytes=rx * 10)],
    )
    gpu_samples = [
        GpuSample(index=i, sm_util_pct=util, mem_used_bytes=20 * GiB, mem_total_bytes=80 * GiB, power_mw=300_000,
                  temp_c=60.0, nvlink_tx_bytes=nvlink, nvlink_rx_bytes=nvlink)
        for i in range(gpus)
    ]
    jobs = jobs or {}
    cg = [CgroupSample(job_id=j, cpu_usage_us=us, mem_current_bytes=GiB) for j, us in jobs.items()]
    app = [AppMetric(job_id=j, name="tokens", value=tokens, counter=True) for j in jobs] if tokens is not None else []
    return NodeSample(node=node, mono_s=t, wall_s=1_000_000.0 + t, host=host, gpus=gpu_samples, jobs=cg, app=app, boot_id=boot)


def job(job_id: str = "n1.1", *, state: str = "running", gpus: tuple[int, ...] = (0,), priority: int = 0,
        name: str = "train", **kw) -> JobInfo:
    node = job_id.rsplit(".", 1)[0]
    return JobInfo(id=job_id, node=node, name=name, state=state, spec=JobSpec(argv=["python", "train.py"], name=name),
                   priority=priority, gpus=list(gpus), submitted_s=1_000_000.0, started_s=1_000_000.0, **kw)


def snapshot(node: str = "n1", samples: list[NodeSample] | None = None, jobs: list[JobInfo] | None = None, seq: int = 10) -> SnapshotReply:
    return SnapshotReply(seq=seq, inventory=inventory(node), samples=samples or [], jobs=jobs or [])
