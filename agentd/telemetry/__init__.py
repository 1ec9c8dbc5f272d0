"""Readers of a node's telemetry; :class:`agentd.telemetry.collector.NodeCollector` is the facade.

host (/proc, /sys), gpu_nvml (NVIDIA through nvidia-ml-py), gpu_sim (simulated GPUs),
cgroup (job cgroups, v1 and v2), processes (the periodic full process scan). Each takes its
root path or module handle as a parameter, so tests point it at fixture trees.
"""
