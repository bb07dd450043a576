"""AMD GPUs through amdsmi (probes/amd.py): absent-safe like NVML, and with a fake amdsmi whose enum values are
the real package's (read from its source, which imports only where ROCm's libamd_smi.so exists), the same
health records and verdicts an NVIDIA node gets: ECC, bad pages, PCIe, power cap, XGMI links, energy, links."""

from __future__ import annotations

import importlib.util
import re
import sys
import types
from enum import IntEnum
from pathlib import Path

import pytest

from analysis.health import DeviceHealth, _judge_amd, _judge_nvml
from probes import amd


def real_constants() -> dict[str, int]:
    spec = importlib.util.find_spec("amdsmi")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("amdsmi (the PyPI package, in the test extras) is not installed")
    text = (Path(next(iter(spec.submodule_search_locations))) / "amdsmi_wrapper.py").read_text()
    return {k: int(v) for k, v in re.findall(r"^(AMDSMI_[A-Z0-9_]+) = (\d+)$", text, re.M)}


class Handle:
    def __init__(self, bdf: str) -> None:
        self.bdf = bdf


def fake_amdsmi(**faults) -> types.ModuleType:
    c = real_constants()
    m = types.ModuleType("amdsmi")
    m.AmdSmiInitFlags = IntEnum("AmdSmiInitFlags", {"INIT_AMD_GPUS": c["AMDSMI_INIT_AMD_GPUS"]})
    m.AmdSmiClkType = IntEnum("AmdSmiClkType", {"GFX": c["AMDSMI_CLK_TYPE_GFX"]})
    m.AmdSmiTemperatureType = IntEnum(
        "AmdSmiTemperatureType", {"HOTSPOT": c["AMDSMI_TEMPERATURE_TYPE_HOTSPOT"]}
    )
    m.AmdSmiTemperatureMetric = IntEnum("AmdSmiTemperatureMetric", {"CURRENT": c["AMDSMI_TEMP_CURRENT"]})
    handles = [Handle("0000:0c:00.0"), Handle("0000:22:00.0")]
    state = {"ecc": 0, "energy": 10_000_000}

    def ecc(h):  # uncorrectable errors appear after the first read when asked
        state["ecc"] += 1
        return {
            "correctable_count": 0,
            "uncorrectable_count": 2 * (state["ecc"] > 1 and bool(faults.get("ecc"))),
            "deferred_count": 0,
        }

    def bad_pages(h):
        status = (
            c["AMDSMI_MEM_PAGE_STATUS_PENDING"]
            if faults.get("pages")
            else c["AMDSMI_MEM_PAGE_STATUS_RESERVED"]
        )
        return [{"value": 0, "page_address": 0x1000, "page_size": 4096, "status": status}]

    def energy(h):
        state["energy"] += 65_360  # x 15.3 uJ: ~1 J per read
        return {"energy_accumulator": state["energy"], "counter_resolution": 15.3, "timestamp": 0}

    m.amdsmi_init = lambda flag: None
    m.amdsmi_shut_down = lambda: None
    m.amdsmi_get_processor_handles = lambda: handles
    m.amdsmi_get_gpu_device_bdf = lambda h: h.bdf
    m.amdsmi_get_gpu_total_ecc_count = ecc
    m.amdsmi_get_gpu_bad_page_info = bad_pages
    m.amdsmi_get_pcie_info = lambda h: {
        "pcie_static": {"max_pcie_width": 16, "max_pcie_speed": 32000},
        "pcie_metric": {
            "pcie_width": 16,
            "pcie_speed": 16000 if faults.get("pcie") else 32000,
            "pcie_replay_count": 0,
        },
    }
    m.amdsmi_get_power_cap_info = lambda h: {"power_cap": 750_000_000, "default_power_cap": 750_000_000}
    m.amdsmi_get_gpu_xgmi_link_status = lambda h: {
        "status": ["U"] * 6 + ["D" if faults.get("xgmi") else "U"] + ["X"],
        "total_links": 8,
    }
    m.amdsmi_get_power_info = lambda h: {"current_socket_power": 612, "average_socket_power": 600}
    m.amdsmi_get_clock_info = lambda h, clk: {"clk": 2100}
    m.amdsmi_get_temp_metric = lambda h, sensor, metric: 71
    m.amdsmi_get_energy_count = energy
    m.amdsmi_topo_get_link_type = lambda a, b: {"hops": 1, "type": c["AMDSMI_LINK_TYPE_XGMI"]}
    return m


def session_with(monkeypatch, **faults) -> amd.AmdSmi:
    monkeypatch.setitem(sys.modules, "amdsmi", fake_amdsmi(**faults))
    return amd.AmdSmi()


def test_amdsmi_absent_or_without_its_library_is_not_available(monkeypatch):
    broken = types.ModuleType("amdsmi")
    broken.__getattr__ = lambda name: (_ for _ in ()).throw(KeyError("libamd_smi.so"))  # what its import does
    monkeypatch.setitem(sys.modules, "amdsmi", broken)
    smi = amd.AmdSmi()
    assert not smi.available and "amdsmi not available" in smi.reason and "libamd_smi.so" in smi.reason
    assert smi.call("amdsmi_get_processor_handles") == amd.NA
    assert amd.snapshot(smi, None) == {"available": False, "reason": smi.reason}


def test_a_healthy_mi300x_snapshot_has_nvmls_shape_and_passes(monkeypatch):
    smi = session_with(monkeypatch)
    h = smi._handles[0]
    before, after = amd.snapshot(smi, h), amd.snapshot(smi, h)
    assert after["pcie"] == {
        "gen_current": 5,
        "gen_max": 5,
        "width_current": 16,
        "width_max": 16,
        "replay_counter": 0,
    }
    assert after["power_limit_enforced_w"] == 750 and after["bad_pages"] == {"reserved": 1}
    assert after["xgmi"] == {"links": 8, "up": 7, "down": 0, "disabled": 1}
    dh = DeviceHealth("cuda:0")
    _judge_nvml(dh, before, after, {"xid_watch": "watched"})
    assert dh.verdict == "pass" and not dh.reasons, dh.reasons


@pytest.mark.parametrize(
    ("fault", "verdict", "words"),
    [
        ("ecc", "fail", "2 uncorrected ECC errors during the run"),
        ("pages", "warn", "bad HBM pages pending retirement"),
        ("xgmi", "fail", "1 of 8 XGMI links down"),
        ("pcie", "warn", "PCIe Gen4 of Gen5 under load"),
    ],
)
def test_an_unhealthy_mi300x_is_judged_as_an_nvidia_gpu_would_be(monkeypatch, fault, verdict, words):
    smi = session_with(monkeypatch, **{fault: True})
    h = smi._handles[0]
    before, after = amd.snapshot(smi, h), amd.snapshot(smi, h)
    dh = DeviceHealth("cuda:0")
    _judge_nvml(dh, before, after, {"xid_watch": "watched"})
    assert dh.verdict == verdict and any(words in r for r in dh.reasons), dh.reasons


def test_telemetry_energy_and_the_xgmi_link_between_two_gpus(monkeypatch):
    smi = session_with(monkeypatch)
    a, b = smi._handles
    s = amd.sample(smi, a)
    assert s["power_w"] == 612 and s["sm_clock_mhz"] == 2100 and s["temperature_c"] == 71
    e0, e1 = amd.energy_mj(smi, a), amd.energy_mj(smi, a)
    assert e1 - e0 == pytest.approx(65_360 * 15.3 / 1000, abs=1)  # mJ
    assert amd.pair_link(smi, a, b) == "xGMI (1 hop)"


def test_only_amdsmi_records_get_the_amd_rules():
    dh = DeviceHealth("cuda:0")
    _judge_amd(dh, {}, {"xgmi": {"links": 8, "down": 3}})  # not from amdsmi: not read as AMD's
    assert dh.verdict == "pass"
