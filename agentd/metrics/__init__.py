"""Pure telemetry data: raw samples and the one place rates are derived.

Imports only the standard library and msgspec, so the daemon, the CLI, the app and the
replay reader all share it.
"""

from agentd.metrics.derive import derive, derive_cgroup, derive_gpu
from agentd.metrics.samples import (
    AppMetric,
    CgroupSample,
    CpuTimes,
    DerivedCgroup,
    DerivedGpu,
    DerivedNode,
    DerivedProc,
    DiskCounters,
    GpuInfo,
    GpuLink,
    GpuProcess,
    GpuSample,
    HostSample,
    NetCounters,
    NodeInventory,
    NodeSample,
    Pressure,
    ProcSample,
)

__all__ = [
    "AppMetric", "CgroupSample", "CpuTimes", "DerivedCgroup", "DerivedGpu", "DerivedNode", "DerivedProc", "ProcSample",
    "DiskCounters", "GpuInfo", "GpuLink", "GpuProcess", "GpuSample", "HostSample",
    "NetCounters", "NodeInventory", "NodeSample", "Pressure", "derive", "derive_cgroup",
    "derive_gpu",
]
