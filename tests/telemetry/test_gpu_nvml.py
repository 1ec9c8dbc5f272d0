"""NvmlBackend against the fake pynvml, and against the real one on this GPU-less machine."""

from __future__ import annotations

import logging

import pytest

from agentd.telemetry.collector import NodeCollector
from agentd.telemetry.gpu_nvml import NvmlBackend

GiB = 1024**3


def test_values_flow_into_samples(fake_nvml):
    fake_nvml.configure(gpu_count=2, processes={1: [(4242, 5 * GiB, 40)]})
    b = NvmlBackend(fake_nvml)
    assert (b.backend, b.status) == ("nvml", "ok")
    first = b.sample()
    second = b.sample()
    g0, g1 = second
    assert (g0.index, g0.uuid) == (0, "GPU-fa4e0000-0000-4000-8000-000000000000")
    assert (g0.sm_util_pct, g0.mem_util_pct) == (50.0, 20.0)
    assert (g1.mem_used_bytes, g1.mem_total_bytes) == (2 * GiB, 80 * GiB)
    assert (g0.power_mw, g0.power_limit_mw, g0.temp_c) == (300000, 700000, 61.0)
    assert g0.energy_mj > first[0].energy_mj
    assert (g0.sm_clock_mhz, g0.mem_clock_mhz) == (1980, 2619)
    assert (g0.pcie_tx_bytes_per_s, g0.pcie_rx_bytes_per_s) == (1000 * 1024, 2000 * 1024)
    assert g0.nvlink_tx_bytes is not None and g0.nvlink_tx_bytes > first[0].nvlink_tx_bytes
    assert g0.throttle_reasons == fake_nvml.nvmlClocksEventReasonSwPowerCap
    assert (g0.ecc_corrected_total, g0.ecc_uncorrected_total, g0.xid_total) == (3, 0, 0)
    assert g0.processes == []
    assert [(p.pid, p.used_bytes, p.sm_pct) for p in g1.processes] == [(4242, 5 * GiB, 40.0)]
    fake_nvml.configure(xid_events=[(1, 79)])
    assert [g.xid_total for g in b.sample()] == [0, 1]
    b.close()


def test_inventory_and_topology(fake_nvml):
    fake_nvml.configure(gpu_count=3)
    b = NvmlBackend(fake_nvml)
    infos = b.gpus()
    assert [i.pci_bus_id for i in infos] == ["00000000:18:00.0", "00000000:19:00.0", "00000000:1A:00.0"]
    assert infos[0].name == "NVIDIA H100 80GB HBM3" and infos[0].mem_total_bytes == 80 * GiB
    assert infos[0].driver_version == "550.54.15" and not infos[0].simulated
    assert [(link.a, link.b, link.kind, link.links) for link in b.links()] == [
        (0, 1, "nvlink", 2), (0, 2, "nvlink", 2), (1, 2, "nvlink", 2)]
    b.close()
    fake_nvml.configure(nvswitch=True)  # an HGX board: every GPU reaches every other through switches
    b = NvmlBackend(fake_nvml)
    assert [(link.a, link.b, link.kind, link.links) for link in b.links()] == [
        (0, 1, "nvlink", 18), (0, 2, "nvlink", 18), (1, 2, "nvlink", 18)]
    b.close()
    fake_nvml.configure(nvlink=False, nvswitch=False)
    b = NvmlBackend(fake_nvml)
    assert {link.kind for link in b.links()} == {"pcie-bridge"}
    assert all(g.nvlink_tx_bytes is None for g in b.sample())
    b.close()


def test_not_supported_logged_once_and_not_retried(fake_nvml, caplog):
    fake_nvml.configure(gpu_count=2, unsupported={"nvmlDeviceGetPowerUsage", "nvmlDeviceGetTotalEccErrors"})
    b = NvmlBackend(fake_nvml)
    with caplog.at_level(logging.INFO, logger="agentd.telemetry.gpu_nvml"):
        for _ in range(20):
            samples = b.sample()
    power_logs = [r for r in caplog.records if "nvmlDeviceGetPowerUsage" in r.getMessage()]
    assert len(power_logs) == 2  # once per GPU, not per tick
    assert fake_nvml.call_count("nvmlDeviceGetPowerUsage") == 2
    assert all(g.power_mw is None and g.ecc_uncorrected_total is None for g in samples)
    # every other value is still there
    assert all(g.sm_util_pct == 50 + g.index and g.temp_c is not None for g in samples)
    b.close()


def test_transient_error_logged_once_but_retried(fake_nvml, caplog):
    fake_nvml.configure(gpu_count=1, failing={"nvmlDeviceGetTemperature": fake_nvml.NVML_ERROR_GPU_IS_LOST})
    b = NvmlBackend(fake_nvml)
    with caplog.at_level(logging.INFO, logger="agentd.telemetry.gpu_nvml"):
        for _ in range(5):
            (g,) = b.sample()
    assert g.temp_c is None and g.power_mw == 300000
    assert len([r for r in caplog.records if "nvmlDeviceGetTemperature" in r.getMessage()]) == 1
    assert fake_nvml.call_count("nvmlDeviceGetTemperature") == 5
    fake_nvml.configure(failing={})
    assert b.sample()[0].temp_c == 61.0
    b.close()


@pytest.mark.parametrize("code,words", [
    ("NVML_ERROR_LIBRARY_NOT_FOUND", "NVML Shared Library Not Found"),
    ("NVML_ERROR_DRIVER_NOT_LOADED", "Driver Not Loaded"),
])
def test_no_driver_inventory(fake_nvml, code, words):
    fake_nvml.configure(init_error=getattr(fake_nvml, code))
    c = NodeCollector("n1", nvml=fake_nvml)
    inv = c.inventory()
    assert inv.gpu_backend == "none"
    assert inv.gpu_status == f"no NVIDIA driver (NVML error: {words})"
    assert inv.gpus == [] and inv.gpu_links == []
    s = c.sample()
    assert s.gpus == [] and s.host.mem_total_bytes > 0
    c.close()


def test_real_pynvml_on_this_machine():
    pytest.importorskip("pynvml")
    c = NodeCollector("real")
    inv = c.inventory()
    if inv.gpu_backend == "nvml":  # a machine with a driver: then GPUs must show up
        assert inv.gpu_status == "ok" and inv.gpus
    else:
        assert inv.gpu_status.startswith("no NVIDIA driver (NVML error: ")
        s = c.sample()
        assert s.gpus == [] and s.host.cpu_per_core and inv.hostname
    c.close()
    c.close()  # idempotent


def test_binding_bug_in_one_call_leaves_the_rest(fake_nvml, monkeypatch, caplog):
    fake_nvml.configure(gpu_count=1)
    b = NvmlBackend(fake_nvml)

    def broken(handle, type):  # nvidia-ml-py's name
        raise TypeError("ctypes argument 2: wrong type")

    monkeypatch.setattr(fake_nvml, "nvmlDeviceGetClockInfo", broken)
    with caplog.at_level(logging.WARNING, logger="agentd.telemetry.gpu_nvml"):
        (g,) = b.sample()
        b.sample()
    assert g.sm_clock_mhz is None and g.mem_clock_mhz is None
    assert g.sm_util_pct == 50.0 and g.power_mw == 300000
    assert len([r for r in caplog.records if "nvmlDeviceGetClockInfo" in r.getMessage()]) == 1
    b.close()
