"""NVIDIA GPUs through NVML (the ``nvidia-ml-py`` package, imported as ``pynvml``).

Hardware is optional, never fatal: without the package, the library or the driver the
backend reports ``backend == "none"`` and a status in words, and samples nothing. Every NVML
call is guarded on its own, so one value the driver refuses never hides the others. A call the
driver does not support is logged once per (call, GPU) and not tried again; other errors are
logged once per (call, GPU, error) and retried on later ticks.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

from agentd.metrics.samples import GpuInfo, GpuLink, GpuProcess, GpuSample

log = logging.getLogger(__name__)

#: Errors that mean "this GPU or driver will never answer this call": stop asking.
PERMANENT_ERRORS = ("NVMLError_NotSupported", "NVMLError_FunctionNotFound", "NVMLError_NoPermission")
#: NVML PCIe throughput is in KB/s (1024 bytes).
PCIE_KB = 1024
#: NVLink throughput field values count KiB.
NVLINK_KIB = 1024
#: How many NVLink ports to probe when the module does not say (NVML_NVLINK_MAX_LINKS).
DEFAULT_NVLINK_MAX_LINKS = 18

__all__ = ["NvmlBackend"]


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class NvmlBackend:
    """GPU inventory and samples from NVML.

    ``nvml`` is the module handle (the real ``pynvml`` when None, a fake one in tests).
    """

    def __init__(self, nvml: ModuleType | None = None) -> None:
        self.backend = "none"
        self.status = ""
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._unsupported: set[tuple[str, int]] = set()
        self._logged: set[tuple[str, int, str]] = set()
        self._infos: list[GpuInfo] = []
        self._nvlinks: dict[int, list[int]] = {}  # gpu index -> active link numbers
        self._peers: dict[int, dict[str, int]] = {}  # gpu index -> peer bus id -> lane count
        self._switch_lanes: dict[int, int] = {}  # gpu index -> lanes to NVSwitches
        self._proc_util_ts: dict[int, int] = {}
        self._xid_counts: dict[int, int] = {}
        self._xid_set: Any = None
        if nvml is None:
            try:
                import pynvml
            except ImportError:
                self.status = (
                    "no NVIDIA driver (NVML error: the nvidia-ml-py package is not installed; "
                    "install fleetdeck[nvidia])"
                )
                return
            nvml = pynvml
        self._nvml = nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            self.status = f"no NVIDIA driver (NVML error: {exc})"
            self._nvml = None
            log.info("GPU telemetry off: %s", self.status)
            return
        try:
            count = nvml.nvmlDeviceGetCount()
            self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except nvml.NVMLError as exc:
            self.status = f"no NVIDIA driver (NVML error: {exc})"
            self._shutdown()
            return
        self.backend = "nvml"
        self.status = "ok"
        self._discover()

    # -- guarded calls --------------------------------------------------------------------

    def _call(self, name: str, gpu: int, *args: Any, quiet: tuple[str, ...] = ()) -> Any:
        """Call ``nvml.<name>(*args)``; None (logged once) when it fails."""
        if (name, gpu) in self._unsupported:
            return None
        fn = getattr(self._nvml, name, None)
        if fn is None:
            self._unsupported.add((name, gpu))
            log.info("GPU %d: this nvidia-ml-py has no %s; that value stays empty", gpu, name)
            return None
        try:
            return fn(*args)
        except self._nvml.NVMLError as exc:
            kind = type(exc).__name__
            if kind in quiet:
                return None
            if kind in PERMANENT_ERRORS:
                self._unsupported.add((name, gpu))
                log.info("GPU %d: %s not available (%s); that value stays empty", gpu, name, exc)
            elif (name, gpu, kind) not in self._logged:
                self._logged.add((name, gpu, kind))
                log.warning("GPU %d: %s failed (%s); will retry each tick, logging once", gpu, name, exc)
            return None
        except Exception as exc:  # noqa: BLE001 - a driver binding bug must not stop the other values
            if (name, gpu, type(exc).__name__) not in self._logged:
                self._logged.add((name, gpu, type(exc).__name__))
                log.warning("GPU %d: %s raised %r; that value stays empty", gpu, name, exc)
            return None

    # -- inventory ------------------------------------------------------------------------

    def _discover(self) -> None:
        nvml = self._nvml
        driver = self._call("nvmlSystemGetDriverVersion", -1)
        max_links = int(getattr(nvml, "NVML_NVLINK_MAX_LINKS", DEFAULT_NVLINK_MAX_LINKS))
        for i, h in enumerate(self._handles):
            pci = self._call("nvmlDeviceGetPciInfo", i, h)
            bus = _text(pci.busId).upper() if pci is not None else ""
            mem = self._call("nvmlDeviceGetMemoryInfo", i, h)
            self._infos.append(GpuInfo(
                index=i,
                name=_text(self._call("nvmlDeviceGetName", i, h) or f"GPU {i}"),
                uuid=_text(self._call("nvmlDeviceGetUUID", i, h) or ""),
                pci_bus_id=bus,
                mem_total_bytes=int(mem.total) if mem is not None else 0,
                power_limit_mw=self._call("nvmlDeviceGetEnforcedPowerLimit", i, h),
                driver_version=_text(driver or ""),
            ))
            links: list[int] = []
            peers: dict[str, int] = {}
            for link in range(max_links):
                # A GPU without NVLink says NotSupported at link 0; past its last port it says
                # InvalidArgument: both just end the probe, neither is worth a log line.
                try:
                    active = nvml.nvmlDeviceGetNvLinkState(h, link)
                except nvml.NVMLError:
                    break
                except AttributeError:
                    break
                if not active:
                    continue
                links.append(link)
                kind = self._call("nvmlDeviceGetNvLinkRemoteDeviceType", i, h, link)
                if kind is not None and kind == getattr(nvml, "NVML_NVLINK_DEVICE_TYPE_SWITCH", 2):
                    # NVSwitch boards: the link ends at a switch that reaches every other GPU.
                    self._switch_lanes[i] = self._switch_lanes.get(i, 0) + 1
                    continue
                remote = self._call("nvmlDeviceGetNvLinkRemotePciInfo", i, h, link)
                if remote is not None:
                    rbus = _text(remote.busId).upper()
                    peers[rbus] = peers.get(rbus, 0) + 1
            self._nvlinks[i] = links
            self._peers[i] = peers
            self._register_xid(i, h)

    def _register_xid(self, index: int, handle: Any) -> None:
        nvml = self._nvml
        event_type = getattr(nvml, "nvmlEventTypeXidCriticalError", None)
        if event_type is None:
            return
        if self._xid_set is None:
            self._xid_set = self._call("nvmlEventSetCreate", -1)
            if self._xid_set is None:
                return
        try:
            nvml.nvmlDeviceRegisterEvents(handle, event_type, self._xid_set)
        except (nvml.NVMLError, AttributeError) as exc:
            # Consumer GPUs and some virtualised ones refuse Xid events: xid_total stays None.
            log.info("GPU %d: Xid events not available (%s); Xid count stays empty", index, exc)
            return
        self._xid_counts[index] = 0

    def gpus(self) -> list[GpuInfo]:
        return list(self._infos)

    def links(self) -> list[GpuLink]:
        """NVLink peers where present, else the PCIe common ancestor of each pair."""
        nvml = self._nvml
        out: list[GpuLink] = []
        if nvml is None:
            return out
        levels = {
            getattr(nvml, "NVML_TOPOLOGY_INTERNAL", 0): "pcie-switch",
            getattr(nvml, "NVML_TOPOLOGY_SINGLE", 10): "pcie-switch",
            getattr(nvml, "NVML_TOPOLOGY_MULTIPLE", 20): "pcie-switch",
            getattr(nvml, "NVML_TOPOLOGY_HOSTBRIDGE", 30): "pcie-bridge",
            getattr(nvml, "NVML_TOPOLOGY_NODE", 40): "pcie-host",
            getattr(nvml, "NVML_TOPOLOGY_SYSTEM", 50): "system",
        }
        n = len(self._handles)
        for a in range(n):
            for b in range(a + 1, n):
                lanes = self._peers.get(a, {}).get(self._infos[b].pci_bus_id, 0)
                lanes = lanes or min(self._switch_lanes.get(a, 0), self._switch_lanes.get(b, 0))
                if lanes:
                    out.append(GpuLink(a=a, b=b, kind="nvlink", links=lanes))
                    continue
                level = self._call("nvmlDeviceGetTopologyCommonAncestor", a, self._handles[a], self._handles[b])
                if level is not None:
                    out.append(GpuLink(a=a, b=b, kind=levels.get(level, "system")))
        return out

    # -- samples --------------------------------------------------------------------------

    def _poll_xid(self) -> None:
        """Drain pending Xid events without waiting (timeout 0)."""
        if self._xid_set is None:
            return
        nvml = self._nvml
        wait = getattr(nvml, "nvmlEventSetWait_v2", None) or getattr(nvml, "nvmlEventSetWait", None)
        if wait is None:  # a binding with event sets but no wait call: no Xid counts, no crash
            return
        for _ in range(1000):  # bounded: never spin on a misbehaving driver
            try:
                data = wait(self._xid_set, 0)
            except nvml.NVMLError:
                return  # Timeout: nothing pending
            index = self._call("nvmlDeviceGetIndex", -1, data.device)
            if index in self._xid_counts:
                self._xid_counts[index] += 1

    def sample(self) -> list[GpuSample]:
        if self._nvml is None:
            return []
        self._poll_xid()
        return [self._sample_one(i, h) for i, h in enumerate(self._handles)]

    def _sample_one(self, i: int, h: Any) -> GpuSample:
        nvml = self._nvml
        c = self._call
        util = c("nvmlDeviceGetUtilizationRates", i, h)
        mem = c("nvmlDeviceGetMemoryInfo", i, h)
        tx = c("nvmlDeviceGetPcieThroughput", i, h, nvml.NVML_PCIE_UTIL_TX_BYTES)
        rx = c("nvmlDeviceGetPcieThroughput", i, h, nvml.NVML_PCIE_UTIL_RX_BYTES)
        throttle = c("nvmlDeviceGetCurrentClocksEventReasons", i, h)
        if throttle is None:
            throttle = c("nvmlDeviceGetCurrentClocksThrottleReasons", i, h)
        ecc_c = c("nvmlDeviceGetTotalEccErrors", i, h, nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, nvml.NVML_VOLATILE_ECC)
        ecc_u = c("nvmlDeviceGetTotalEccErrors", i, h, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC)
        temp = c("nvmlDeviceGetTemperature", i, h, nvml.NVML_TEMPERATURE_GPU)
        nv_tx, nv_rx = self._nvlink_bytes(i, h)
        return GpuSample(
            index=i,
            uuid=self._infos[i].uuid,
            sm_util_pct=None if util is None else float(util.gpu),
            mem_util_pct=None if util is None else float(util.memory),
            mem_used_bytes=None if mem is None else int(mem.used),
            mem_total_bytes=None if mem is None else int(mem.total),
            power_mw=c("nvmlDeviceGetPowerUsage", i, h),
            power_limit_mw=c("nvmlDeviceGetEnforcedPowerLimit", i, h),
            energy_mj=c("nvmlDeviceGetTotalEnergyConsumption", i, h),
            temp_c=None if temp is None else float(temp),
            sm_clock_mhz=c("nvmlDeviceGetClockInfo", i, h, nvml.NVML_CLOCK_SM),
            mem_clock_mhz=c("nvmlDeviceGetClockInfo", i, h, nvml.NVML_CLOCK_MEM),
            pcie_tx_bytes_per_s=None if tx is None else float(tx * PCIE_KB),
            pcie_rx_bytes_per_s=None if rx is None else float(rx * PCIE_KB),
            nvlink_tx_bytes=nv_tx,
            nvlink_rx_bytes=nv_rx,
            throttle_reasons=int(throttle or 0),
            ecc_corrected_total=ecc_c,
            ecc_uncorrected_total=ecc_u,
            xid_total=self._xid_counts.get(i),
            processes=self._processes(i, h),
        )

    def _nvlink_bytes(self, i: int, h: Any) -> tuple[int | None, int | None]:
        links = self._nvlinks.get(i)
        nvml = self._nvml
        fi_tx = getattr(nvml, "NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX", None)
        fi_rx = getattr(nvml, "NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX", None)
        if not links or fi_tx is None or fi_rx is None:
            return None, None
        ids = [(fi, link) for link in links for fi in (fi_tx, fi_rx)]
        values = self._call("nvmlDeviceGetFieldValues", i, h, ids)
        if values is None:
            return None, None
        tx = rx = 0
        ok = False
        for v in values:
            if getattr(v, "nvmlReturn", 0) != 0:
                continue
            ok = True
            if v.fieldId == fi_tx:
                tx += int(v.value.ullVal)
            else:
                rx += int(v.value.ullVal)
        return (tx * NVLINK_KIB, rx * NVLINK_KIB) if ok else (None, None)

    def _processes(self, i: int, h: Any) -> list[GpuProcess]:
        used: dict[int, int] = {}
        for name in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            for p in self._call(name, i, h) or []:
                used[int(p.pid)] = used.get(int(p.pid), 0) + int(p.usedGpuMemory or 0)
        sm: dict[int, float] = {}
        if used:
            # Samples newer than the last one seen; NotFound just means "none since then".
            samples = self._call(
                "nvmlDeviceGetProcessUtilization", i, h, self._proc_util_ts.get(i, 0), quiet=("NVMLError_NotFound",)
            )
            for s in samples or []:
                sm[int(s.pid)] = float(s.smUtil)
                self._proc_util_ts[i] = max(self._proc_util_ts.get(i, 0), int(s.timeStamp))
        return [GpuProcess(pid=pid, used_bytes=b, sm_pct=sm.get(pid)) for pid, b in sorted(used.items())]

    # -- lifetime -------------------------------------------------------------------------

    def _shutdown(self) -> None:
        nvml, self._nvml = self._nvml, None
        if nvml is None:
            return
        if self._xid_set is not None:
            try:
                nvml.nvmlEventSetFree(self._xid_set)
            except Exception:  # noqa: BLE001 - shutting down; nothing to do about it
                pass
            self._xid_set = None
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as exc:
            log.debug("nvmlShutdown failed: %s", exc)

    def close(self) -> None:
        """Shut NVML down (idempotent)."""
        self._shutdown()
        self._handles = []

