"""NVML without a driver: every field 'not available', never a crash; telemetry sampled in the background."""

from __future__ import annotations

import sys

import pytest
import torch
from helpers import fake_pynvml

from probes.device import describe_host
from probes.nvml import NA, Nvml, TelemetrySampler, nvlink_version, nvml_device_info


def test_nvml_absent_is_not_available_everywhere(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(init_error=True))
    nv = Nvml()
    assert not nv.available and "NVML not available" in nv.reason
    assert nv.call("nvmlDeviceGetCount") == NA
    assert nv.handle(torch.device("cpu")) is None
    host = describe_host(nv)
    assert host["driver"] == NA and host["nvml"].startswith("NVML not available")
    info = nvml_device_info(nv, None)
    assert info and all(v == NA for v in info.values())


def test_nvml_present_but_every_field_unsupported(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(init_error=False))
    nv = Nvml()
    assert nv.available
    info = nvml_device_info(nv, handle=object())
    assert set(info) >= {
        "name",
        "uuid",
        "sm_clock_mhz",
        "memory_bus_width_bits",
        "pcie_gen_current",
        "pcie_width_max",
        "nvlink",
        "power_limit_w",
        "ecc_mode",
        "temperature_c",
        "throttle_reasons",
    }
    assert all(v == NA for v in info.values()), info


def test_real_nvml_on_this_machine_never_raises():
    nv = Nvml()
    host = describe_host(nv)
    assert host["python"] and host["torch"] == torch.__version__
    if not nv.available:
        assert host["driver"] == NA


def test_telemetry_without_nvml_reports_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(init_error=True))
    nv = Nvml()
    with TelemetrySampler(nv, torch.device("cpu"), 0.01) as t:
        pass
    s = t.summary()
    assert s["available"] is False and s["reason"]


def test_telemetry_samples_in_the_background(monkeypatch):
    """With a working (fake) NVML, the sampler records clock, power, temperature and throttle reasons."""
    m = fake_pynvml(init_error=False)
    m.NVML_CLOCK_SM = 1
    m.nvmlClocksEventReasonSwPowerCap = 4
    m.nvmlDeviceGetClockInfo = lambda h, c: 1650
    m.nvmlDeviceGetPowerUsage = lambda h: 699_000
    m.nvmlDeviceGetTemperature = lambda h, s: 71
    m.nvmlDeviceGetCurrentClocksEventReasons = lambda h: 4
    monkeypatch.setitem(sys.modules, "pynvml", m)
    nv = Nvml()
    sampler = TelemetrySampler(nv, torch.device("cpu"), 0.005)
    sampler.handle = object()  # pretend the CPU had an NVML handle
    import time

    with sampler:
        time.sleep(0.05)
    s = sampler.summary()
    assert s["available"] and s["n"] >= 3
    assert s["sm_clock_mhz"] == {"min": 1650, "median": 1650, "max": 1650}
    assert s["power_w"]["median"] == pytest.approx(699.0)
    assert s["throttle_reasons"] == ["sw_power_cap"]


@pytest.mark.parametrize(
    ("enum", "expected"), [(5, ("3.1", 3)), (6, ("4.0", 4)), (7, ("5.0", 5)), (3, ("2.2", 2))]
)
def test_nvlink_version_enum_is_named_by_generation(enum, expected):
    assert nvlink_version(enum) == expected


@pytest.mark.parametrize("enum", [0, 99, "not available", None])
def test_unknown_nvlink_version_enum_is_none(enum):
    assert nvlink_version(enum) is None


def test_nvml_fields_record_the_nvlink_generation_not_the_raw_enum(monkeypatch):
    m = fake_pynvml(init_error=False)
    m.nvmlDeviceGetNvLinkState = lambda h, link: 1 if link < 12 else (_ for _ in ()).throw(m.NVMLError("x"))
    m.nvmlDeviceGetNvLinkVersion = lambda h, link: 5  # what an A100 reports: NVML_NVLINK_VERSION_3_1
    monkeypatch.setitem(sys.modules, "pynvml", m)
    nv = Nvml()
    info = nvml_device_info(nv, object())
    assert info["nvlink"]["active_links"] == 12 and info["nvlink"]["generation"] == 3
    assert info["nvlink"]["links"][0]["version"] == "3.1" and info["nvlink"]["links"][0]["version_enum"] == 5


def test_a_mig_instance_maps_to_its_physical_gpu_and_an_unknown_uuid_to_none(monkeypatch):
    """torch reports a MIG instance's UUID; NVML knows it as "MIG-...": the physical GPU's handle is used, and a
    UUID NVML cannot find never falls back to some GPU by index."""
    import types

    import torch

    from probes.nvml import Nvml

    handles = {"MIG-abc": "mig-handle", "GPU-phys": "gpu-handle"}

    class NVMLError(Exception):
        pass

    def by_uuid(u):
        if u not in handles:
            raise NVMLError("Not Found")
        return handles[u]

    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByUUID=by_uuid,
        nvmlDeviceGetDeviceHandleFromMigDeviceHandle=lambda h: "gpu-handle" if h == "mig-handle" else None,
        nvmlDeviceGetHandleByIndex=lambda i: "wrong-gpu-by-index",
    )
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake)
    nv = Nvml()
    props = {"uuid": "abc"}
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(**props))
    assert nv.handle(torch.device("cuda", 0)) == "gpu-handle"
    props["uuid"] = "phys"
    assert nv.handle(torch.device("cuda", 0)) == "gpu-handle"
    props["uuid"] = "nobody"
    assert nv.handle(torch.device("cuda", 0)) is None
