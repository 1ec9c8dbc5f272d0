"""The kernel-facing read layer: /proc and cgroupfs files parsed in one place.

Every reader takes its root path (``proc_root``, a cgroup directory or ``cgroup_root``), so
tests point it at a fixture tree. A file that is missing, unreadable or malformed gives None
(or an empty result), never an exception: the kernel removes files of exiting processes and
cgroups at any moment, so absence is a normal answer.

This package only reads. Writes to cgroupfs (mkdir, freeze, moving pids, limits) live in
:mod:`agentd.control.cgroups`. It is pure stdlib and imports nothing else from agentd, so
every layer (telemetry, control, transport, the job-side report helper) may use it.

Modules: :mod:`~agentd.kernel.files` (cheap raw reads), :mod:`~agentd.kernel.procfs`
(/proc), :mod:`~agentd.kernel.cgroupfs` (cgroup v1 and v2), :mod:`~agentd.kernel.psi`
(pressure stall files, shared by both).
"""

from agentd.kernel.cgroupfs import DEFAULT_CGROUP_ROOT
from agentd.kernel.procfs import DEFAULT_PROC_ROOT

__all__ = ["DEFAULT_CGROUP_ROOT", "DEFAULT_PROC_ROOT"]
