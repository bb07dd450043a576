"""Energy (issue 24): joules from NVML's energy counter (or integrated power) during every case, per TFLOP, GB or
token beside each headline, in the run document, the report and the Prometheus export; without NVML, 'not
measured' and why. NVML is faked with nvidia-ml-py's real constants; the clock is this process's."""

from __future__ import annotations

import sys
import time
import types

import pytest
import torch
from helpers import fake_pynvml, make_doc

from analysis.rundoc import headline_summary
from probes.nvml import Nvml, TelemetrySampler

CPU = torch.device("cpu")


def energy_nvml(monkeypatch, counter: bool = True, watts: float = 400.0) -> Nvml:
    import pynvml as real

    m = types.ModuleType("pynvml")
    for k in dir(real):
        if k.startswith(("NVML_", "nvmlClocksEventReason", "nvmlClocksThrottleReason")):
            setattr(m, k, getattr(real, k))

    class NVMLError(Exception):
        pass

    t0 = time.perf_counter()

    def energy(handle):  # mJ since "driver load": a GPU drawing `watts` the whole time
        if not counter:
            raise NVMLError("Not Supported")
        return 5_000_000_000 + int((time.perf_counter() - t0) * watts * 1000)

    m.NVMLError = NVMLError
    m.nvmlInit = lambda: None
    m.nvmlShutdown = lambda: None
    m.nvmlDeviceGetTotalEnergyConsumption = energy
    m.nvmlDeviceGetPowerUsage = lambda h: int(watts * 1000)  # mW
    m.nvmlDeviceGetClockInfo = lambda h, clock: 1980
    m.nvmlDeviceGetTemperature = lambda h, sensor: 61
    m.nvmlDeviceGetCurrentClocksEventReasons = lambda h: 0
    monkeypatch.setitem(sys.modules, "pynvml", m)
    nv = Nvml()
    nv.handle = lambda device: "gpu-0"  # the CPU stands in for the GPU the fake describes
    return nv


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.parametrize("counter", [True, False])
def test_energy_from_the_counter_or_else_from_integrated_power(monkeypatch, counter):
    nv = energy_nvml(monkeypatch, counter=counter, watts=400.0)
    with TelemetrySampler(nv, CPU, 0.01) as t:
        busy(0.3)
    e = t.summary()["energy"]
    assert e["measured"] and e["avg_power_w"] == pytest.approx(400.0, rel=0.05)
    assert e["joules"] == pytest.approx(400.0 * e["seconds"], rel=0.05)
    assert e["source"].startswith("NVML energy counter" if counter else "power samples integrated")


def test_without_nvml_energy_is_not_measured_and_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(init_error=True))
    with TelemetrySampler(Nvml(), CPU, 0.01) as t:
        pass
    e = t.summary()["energy"]
    assert e == {"measured": False, "why": e["why"]} and "NVML not available" in e["why"]


def test_a_case_gets_joules_per_tflop_and_its_headline_the_median(monkeypatch, tmp_path):
    from helpers import TINY_PROBES_TOML

    from probes.config import load_config
    from probes.context import Context, measure_case

    p = tmp_path / "b.toml"
    p.write_text(TINY_PROBES_TOML)
    ctx = Context(cfg=load_config(p), devices=[CPU], nvml=energy_nvml(monkeypatch, watts=300.0))
    a = torch.randn(128, 128)
    flops = 2 * 128**3
    m = measure_case(
        ctx,
        probe="matmul",
        case="c",
        device=CPU,
        params={},
        fn=lambda: a @ a,
        check=None,
        flops=flops,
        headline="matmul_peak_fp32_torch",
    )
    e = m.telemetry["energy"]
    median = m.timing["stats"]["median_s"]
    assert e["per"] == "TFLOP" and e["joules_per"] == pytest.approx(
        e["avg_power_w"] * median / (flops / 1e12)
    )
    row = headline_summary([m.to_dict()])[0]
    assert row["energy"]["per"] == "TFLOP" and row["energy"]["joules_per"] == pytest.approx(e["joules_per"])


def test_report_and_prometheus_show_energy_or_why_not(tmp_path):
    from rich.console import Console

    from analysis import prometheus
    from analysis.report import print_report

    doc = make_doc()
    doc["summary"][0]["energy"] = {"joules_per": 0.25, "per": "GB", "avg_power_w": 300.0, "source": "x"}
    out = Console(record=True, width=200)
    print_report(doc, out)
    assert "0.25 J/GB" in out.export_text()
    text = prometheus.registry(doc)
    from prometheus_client import generate_latest

    prom = generate_latest(text).decode()
    assert (
        'gpuprobe_energy_joules_per_unit{device="cpu",figure="dram_copy_torch",node="h",per="GB"} 0.25'
        in prom
    )
    doc["summary"][0]["energy"] = {"joules_per": None, "why": "not measured (NVML not available: no driver)"}
    out = Console(record=True, width=200)
    print_report(doc, out)
    assert "energy: not measured (NVML not available: no driver)" in out.export_text()
    assert "gpuprobe_energy_joules_per_unit{" not in generate_latest(prometheus.registry(doc)).decode()
