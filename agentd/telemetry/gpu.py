"""The interface every GPU backend offers to the collector (NVML, simulated, none)."""

from __future__ import annotations

from typing import Protocol

from agentd.metrics.samples import GpuInfo, GpuLink, GpuSample

__all__ = ["GpuBackend", "NoGpuBackend"]


class GpuBackend(Protocol):
    """A source of GPU inventory and samples.

    ``backend`` is ``"nvml"``, ``"simulated"`` or ``"none"``; ``status`` explains in words
    (``"ok"``, ``"simulated"``, ``"no NVIDIA driver (NVML error: ...)"``).
    """

    backend: str
    status: str

    def gpus(self) -> list[GpuInfo]:
        """Static facts of each GPU."""
        ...

    def links(self) -> list[GpuLink]:
        """How the GPUs connect to each other."""
        ...

    def sample(self) -> list[GpuSample]:
        """One reading of every GPU; values the hardware does not offer are None."""
        ...

    def close(self) -> None:
        """Release the library (idempotent)."""
        ...


class NoGpuBackend:
    """No GPUs: what a node without a driver reports."""

    backend = "none"

    def __init__(self, status: str) -> None:
        self.status = status

    def gpus(self) -> list[GpuInfo]:
        return []

    def links(self) -> list[GpuLink]:
        return []

    def sample(self) -> list[GpuSample]:
        return []

    def close(self) -> None:
        pass
