"""A fake ``pynvml`` (nvidia-ml-py) for machines without NVIDIA GPUs.

Follows the real module's names, signatures, return types and error classes (the error
subclasses are generated from the ``NVML_ERROR_*`` constants the same way nvidia-ml-py does).
Load a fresh copy per test (``load_fake_nvml()`` in tests/telemetry/conftest.py) and configure
it with :func:`configure`; its state is module-global like the real library's.
"""

from __future__ import annotations

import string
import sys
from types import SimpleNamespace
from typing import ClassVar

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_IN_USE = 19
NVML_ERROR_MEMORY = 20
NVML_ERROR_NO_DATA = 21
NVML_ERROR_UNKNOWN = 999

NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_GRAPHICS = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_PCIE_UTIL_TX_BYTES = 0
NVML_PCIE_UTIL_RX_BYTES = 1
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_NVLINK_MAX_LINKS = 36
NVML_TOPOLOGY_INTERNAL = 0
NVML_TOPOLOGY_SINGLE = 10
NVML_TOPOLOGY_MULTIPLE = 20
NVML_TOPOLOGY_HOSTBRIDGE = 30
NVML_TOPOLOGY_NODE = 40
NVML_TOPOLOGY_SYSTEM = 50
NVML_NVLINK_DEVICE_TYPE_GPU = 0x00
NVML_NVLINK_DEVICE_TYPE_SWITCH = 0x02
NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX = 138
NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX = 139
nvmlEventTypeXidCriticalError = 0x0000000000000008
nvmlClocksEventReasonSwPowerCap = 0x0000000000000004
nvmlClocksThrottleReasonSwPowerCap = nvmlClocksEventReasonSwPowerCap


class NVMLError(Exception):
    _valClassMapping: ClassVar[dict[int, type]] = {}
    _errcode_to_string: ClassVar[dict[int, str]] = {
        NVML_ERROR_UNINITIALIZED: "Uninitialized",
        NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
        NVML_ERROR_NOT_SUPPORTED: "Not Supported",
        NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
        NVML_ERROR_NOT_FOUND: "Not Found",
        NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
        NVML_ERROR_TIMEOUT: "Timeout",
        NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
        NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
        NVML_ERROR_GPU_IS_LOST: "GPU is lost",
        NVML_ERROR_UNKNOWN: "Unknown Error",
    }

    def __new__(typ, value):  # mirrors nvidia-ml-py
        if typ == NVMLError:
            typ = NVMLError._valClassMapping.get(value, typ)
        obj = Exception.__new__(typ)
        obj.value = value
        return obj

    def __str__(self):
        return NVMLError._errcode_to_string.get(self.value, f"NVML Error with code {self.value}")

    def __eq__(self, other):
        return self.value == other.value

    __hash__ = Exception.__hash__


def _extractNVMLErrorsAsClasses():  # mirrors nvidia-ml-py
    this_module = sys.modules[__name__]
    for err_name in [x for x in dir(this_module) if x.startswith("NVML_ERROR_")]:
        class_name = "NVMLError_" + string.capwords(err_name.replace("NVML_ERROR_", ""), "_").replace("_", "")
        err_val = getattr(this_module, err_name)

        def gen_new(val):
            def new(typ, *args):
                return NVMLError.__new__(typ, val)
            return new

        cls = type(class_name, (NVMLError,), {"__new__": gen_new(err_val)})
        cls.__module__ = __name__
        setattr(this_module, class_name, cls)
        NVMLError._valClassMapping[err_val] = cls


_extractNVMLErrorsAsClasses()


# -- configuration (fake only) ------------------------------------------------------------

_config = SimpleNamespace(
    gpu_count=2,
    init_error=None,  # e.g. NVML_ERROR_LIBRARY_NOT_FOUND or NVML_ERROR_DRIVER_NOT_LOADED
    unsupported=set(),  # names of calls that raise NVMLError_NotSupported
    failing={},  # name -> error code raised on every call
    nvlink=True,  # every pair of GPUs joined by NVLink (2 lanes each)
    nvswitch=False,  # instead: every GPU has 18 lanes to NVSwitches
    processes={},  # gpu index -> list of (pid, used_bytes, sm_pct)
    xid_events=[],  # pending (gpu index, xid) events
)
_state = SimpleNamespace(initialized=0, calls={}, energy={}, nvlink_kib={})


def configure(**kwargs):
    """Set the fake's behaviour: see the keys of ``_config``."""
    for key, value in kwargs.items():
        if not hasattr(_config, key):
            raise AttributeError(f"fake pynvml has no setting {key!r}")
        setattr(_config, key, value)


def call_count(name):
    """How many times the backend called ``name`` (fake only)."""
    return _state.calls.get(name, 0)


def _enter(name, handle=None):
    _state.calls[name] = _state.calls.get(name, 0) + 1
    if not _state.initialized:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    if name in _config.unsupported:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    if name in _config.failing:
        raise NVMLError(_config.failing[name])
    if handle is not None and not isinstance(handle, _Handle):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)


class _Handle:
    """Stands in for the opaque ``c_nvmlDevice_t`` pointer."""

    def __init__(self, index):
        self.index = index


class _Struct(SimpleNamespace):
    """Stands in for nvidia-ml-py's ctypes structures (attribute access only)."""


def _bus_id(index):
    return b"00000000:%02X:00.0" % (0x18 + index)


# -- library ------------------------------------------------------------------------------

def nvmlInit():
    _state.calls["nvmlInit"] = _state.calls.get("nvmlInit", 0) + 1
    if _config.init_error is not None:
        raise NVMLError(_config.init_error)
    _state.initialized += 1


def nvmlInitWithFlags(flags):
    nvmlInit()


def nvmlShutdown():
    _enter("nvmlShutdown")
    _state.initialized -= 1


def nvmlSystemGetDriverVersion():
    _enter("nvmlSystemGetDriverVersion")
    return "550.54.15"


def nvmlDeviceGetCount():
    _enter("nvmlDeviceGetCount")
    return _config.gpu_count


def nvmlDeviceGetHandleByIndex(index):
    _enter("nvmlDeviceGetHandleByIndex")
    if not 0 <= index < _config.gpu_count:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return _Handle(index)


def nvmlDeviceGetIndex(handle):
    _enter("nvmlDeviceGetIndex", handle)
    return handle.index


def nvmlDeviceGetName(handle):
    _enter("nvmlDeviceGetName", handle)
    return "NVIDIA H100 80GB HBM3"


def nvmlDeviceGetUUID(handle):
    _enter("nvmlDeviceGetUUID", handle)
    return f"GPU-fa4e0000-0000-4000-8000-{handle.index:012d}"


def nvmlDeviceGetPciInfo(handle):
    _enter("nvmlDeviceGetPciInfo", handle)
    return _Struct(busId=_bus_id(handle.index), domain=0, bus=0x18 + handle.index, device=0)


def nvmlDeviceGetUtilizationRates(handle):
    _enter("nvmlDeviceGetUtilizationRates", handle)
    return _Struct(gpu=50 + handle.index, memory=20 + handle.index)


def nvmlDeviceGetMemoryInfo(handle, version=None):
    _enter("nvmlDeviceGetMemoryInfo", handle)
    total = 80 * 1024**3
    used = (1 + handle.index) * 1024**3
    return _Struct(total=total, free=total - used, used=used)


def nvmlDeviceGetPowerUsage(handle):
    _enter("nvmlDeviceGetPowerUsage", handle)
    return 300_000 + handle.index * 1000


def nvmlDeviceGetEnforcedPowerLimit(handle):
    _enter("nvmlDeviceGetEnforcedPowerLimit", handle)
    return 700_000


def nvmlDeviceGetPowerManagementLimit(handle):
    _enter("nvmlDeviceGetPowerManagementLimit", handle)
    return 700_000


def nvmlDeviceGetTotalEnergyConsumption(handle):
    _enter("nvmlDeviceGetTotalEnergyConsumption", handle)
    _state.energy[handle.index] = _state.energy.get(handle.index, 1_000_000) + 300_000
    return _state.energy[handle.index]


def nvmlDeviceGetTemperature(handle, sensor):
    _enter("nvmlDeviceGetTemperature", handle)
    if sensor != NVML_TEMPERATURE_GPU:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return 61 + handle.index


def nvmlDeviceGetClockInfo(handle, type):  # nvidia-ml-py's name
    _enter("nvmlDeviceGetClockInfo", handle)
    return {NVML_CLOCK_SM: 1980, NVML_CLOCK_MEM: 2619, NVML_CLOCK_GRAPHICS: 1980}[type]


def nvmlDeviceGetPcieThroughput(device, counter):
    _enter("nvmlDeviceGetPcieThroughput", device)
    return 1000 if counter == NVML_PCIE_UTIL_TX_BYTES else 2000  # KB/s


def nvmlDeviceGetCurrentClocksEventReasons(handle):
    _enter("nvmlDeviceGetCurrentClocksEventReasons", handle)
    return nvmlClocksEventReasonSwPowerCap


def nvmlDeviceGetCurrentClocksThrottleReasons(handle):
    _enter("nvmlDeviceGetCurrentClocksThrottleReasons", handle)
    return nvmlClocksThrottleReasonSwPowerCap


def nvmlDeviceGetTotalEccErrors(handle, errorType, counterType):
    _enter("nvmlDeviceGetTotalEccErrors", handle)
    return 3 if errorType == NVML_MEMORY_ERROR_TYPE_CORRECTED else 0


def _procs(handle):
    return [
        _Struct(pid=pid, usedGpuMemory=used, gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF)
        for pid, used, _sm in _config.processes.get(handle.index, [])
    ]


def nvmlDeviceGetComputeRunningProcesses(handle):
    _enter("nvmlDeviceGetComputeRunningProcesses", handle)
    return _procs(handle)


def nvmlDeviceGetGraphicsRunningProcesses(handle):
    _enter("nvmlDeviceGetGraphicsRunningProcesses", handle)
    return []


def nvmlDeviceGetProcessUtilization(handle, timeStamp):
    _enter("nvmlDeviceGetProcessUtilization", handle)
    samples = [
        _Struct(pid=pid, timeStamp=timeStamp + 1000, smUtil=sm, memUtil=0, encUtil=0, decUtil=0)
        for pid, _used, sm in _config.processes.get(handle.index, [])
    ]
    if not samples:
        raise NVMLError(NVML_ERROR_NOT_FOUND)
    return samples


def nvmlDeviceGetNvLinkState(device, link):
    _enter("nvmlDeviceGetNvLinkState", device)
    if not _config.nvlink or _config.gpu_count < 2:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    # Two lanes to every other GPU, then unused ports, then the end of the ports.
    peers = _config.gpu_count - 1
    if link >= NVML_NVLINK_MAX_LINKS:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    if _config.nvswitch:
        return 1 if link < 18 else 0
    return 1 if link < 2 * peers else 0


def nvmlDeviceGetNvLinkRemoteDeviceType(handle, link):
    _enter("nvmlDeviceGetNvLinkRemoteDeviceType", handle)
    return NVML_NVLINK_DEVICE_TYPE_SWITCH if _config.nvswitch else NVML_NVLINK_DEVICE_TYPE_GPU


def nvmlDeviceGetNvLinkRemotePciInfo(device, link):
    _enter("nvmlDeviceGetNvLinkRemotePciInfo", device)
    others = [i for i in range(_config.gpu_count) if i != device.index]
    peer = others[link // 2]
    return _Struct(busId=_bus_id(peer), domain=0, bus=0x18 + peer, device=0)


def nvmlDeviceGetTopologyCommonAncestor(device1, device2):
    _enter("nvmlDeviceGetTopologyCommonAncestor", device1)
    return NVML_TOPOLOGY_HOSTBRIDGE


def nvmlDeviceGetFieldValues(handle, fieldIds):
    _enter("nvmlDeviceGetFieldValues", handle)
    out = []
    for fid in fieldIds:
        field, scope = fid if isinstance(fid, tuple) else (fid, 0)
        key = (handle.index, field, scope)
        _state.nvlink_kib[key] = _state.nvlink_kib.get(key, 0) + 1024
        out.append(_Struct(fieldId=field, scopeId=scope, timestamp=0, latencyUsec=0, valueType=4,
                           nvmlReturn=NVML_SUCCESS, value=_Struct(ullVal=_state.nvlink_kib[key])))
    return out


def nvmlEventSetCreate():
    _enter("nvmlEventSetCreate")
    return _Struct(kind="event-set")


def nvmlDeviceRegisterEvents(handle, eventTypes, eventSet):
    _enter("nvmlDeviceRegisterEvents", handle)


def nvmlEventSetWait_v2(eventSet, timeoutms):
    _enter("nvmlEventSetWait_v2")
    if not _config.xid_events:
        raise NVMLError(NVML_ERROR_TIMEOUT)
    index, xid = _config.xid_events.pop(0)
    return _Struct(device=_Handle(index), eventType=nvmlEventTypeXidCriticalError, eventData=xid,
                   gpuInstanceId=0, computeInstanceId=0)


def nvmlEventSetWait(eventSet, timeoutms):
    return nvmlEventSetWait_v2(eventSet, timeoutms)


def nvmlEventSetFree(eventSet):
    _enter("nvmlEventSetFree")
