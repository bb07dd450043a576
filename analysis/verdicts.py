"""Verdicts: each headline figure of a run against the spec sheet and against what good nodes achieve.

A figure is judged against the published figure of good nodes of the same SKU (../shared/reference/gpus.md),
or where none is published against a documented default fraction of the sheet: pass at >= 90 % of that
good figure, warn at >= 75 %, fail below. Beside it, the sheet checked against the card itself: NVML's bus
width x memory clock, and SMs x the SM clock the card actually held during the matmul x FLOP per clock, so
"720 TF at 1650 MHz under a power cap" is explained rather than merely failed. CPU runs get no verdict
against a GPU sheet.

    python -m analysis validate RUN.json
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analysis import specs

# Good-node fractions of the sheet, from published measurements (gpus.md "What good nodes achieve").
GOOD_FRACTION: dict[str, dict[str, float]] = {
    "h100-sxm5-80gb": {"memory": 3.0 / 3.35, "bf16": 794 / 989.4, "fp8": 1400 / 1978.9},
    "a100-sxm4-40gb": {"memory": 1490 / 1555, "bf16": 271 / 312},
    "a100-sxm4-80gb": {"bf16": 271 / 312},
    "h200-sxm-141gb": {"memory": 3.9 / 4.8, "fp8": 1450 / 1978.9},
    "mi300x": {"memory": 3.9 / 5.3, "bf16": 668 / 1307.4},
}
# Where nothing is published: a documented default (a healthy node reaches this much of its sheet).
DEFAULT_GOOD_FRACTION = {
    "memory": 0.85,
    "bf16": 0.75,
    "fp16": 0.75,
    "tf32": 0.70,
    "fp32": 0.80,
    "fp8": 0.70,
    "int8": 0.70,
    "link": 0.80,
    "host": 0.80,
}
PASS, WARN = 0.90, 0.75
PCIE_PER_DIRECTION = {3: 15.75e9, 4: 31.5e9, 5: 63e9, 6: 126e9}  # x16 payload


@dataclass
class Verdict:
    figure: str
    device: str
    measured: float
    unit: str
    spec: float | None
    ratio: float | None
    good: float | None
    verdict: str  # pass, warn, fail, no verdict
    note: str = ""


def judge(measured: float, good: float) -> str:
    r = measured / good
    return "pass" if r >= PASS else "warn" if r >= WARN else "fail"


def _good(key: str, kind: str, spec_value: float) -> float:
    return spec_value * GOOD_FRACTION.get(key, {}).get(kind, DEFAULT_GOOD_FRACTION.get(kind, 0.8))


def validate(doc: dict[str, Any]) -> list[Verdict]:
    out: list[Verdict] = []
    devices = {d.get("torch_device"): d for d in doc.get("devices", [])}
    for s in doc.get("summary", []):
        dev = devices.get(s["device"]) or next(iter(devices.values()), {})
        name = dev.get("name", "")
        v = Verdict(s["name"], s["device"], s["value"], s["unit"], None, None, None, "no verdict")
        out.append(v)
        if dev.get("kind") == "cpu" or s["device"].startswith("cpu"):
            v.note = "CPU figures: no GPU spec sheet to judge them against"
            continue
        key = specs.lookup(name)
        if key is None:
            v.note = specs.unknown_sku_line(name)
            continue
        spec = specs.get(key)
        kind, spec_value = _spec_for(s, spec, dev)
        if spec_value is None:
            v.note = f"{spec.name} has no sheet figure for {s['name']}"
            continue
        v.spec, v.ratio = spec_value, s["value"] / spec_value
        v.good = _good(key, kind, spec_value)
        v.verdict = judge(s["value"], v.good)
        v.note = _explain(doc, s, dev, spec)
    return out


def _spec_for(s: dict[str, Any], spec: specs.GPUSpec, dev: dict[str, Any]) -> tuple[str, float | None]:
    n = s["name"]
    if n.startswith("dram_"):
        return "memory", spec.memory_bytes_per_s
    if n.startswith("matmul_peak_"):
        fam = n.removeprefix("matmul_peak_").split("_")[0]
        return fam, spec.flop_per_s(fam)
    if "_busbw_" in n:
        return "link", spec.link_bytes_per_s_per_direction
    if n.startswith("host_link_"):
        gen = (dev.get("nvml") or {}).get("pcie_gen_max") if isinstance(dev.get("nvml"), dict) else None
        if not isinstance(gen, int):
            gen = int(spec.host_bus.split()[1][0]) if spec.host_bus.startswith("PCIe") else None
        per_dir = PCIE_PER_DIRECTION.get(gen) if gen else None
        if per_dir and "bidir" in n:
            per_dir *= 2
        return "host", per_dir
    return "", None


def _explain(doc: dict[str, Any], s: dict[str, Any], dev: dict[str, Any], spec: specs.GPUSpec) -> str:
    """The card's own view: theoretical bandwidth from NVML, tensor peak at the clock held during the case."""
    nv = dev.get("nvml") if isinstance(dev.get("nvml"), dict) else {}
    if s["name"].startswith("dram_"):
        bus, clk = nv.get("memory_bus_width_bits"), nv.get("memory_clock_max_mhz")
        if isinstance(bus, int) and isinstance(clk, (int, float)):
            return f"NVML: {bus}-bit bus x {clk} MHz -> {specs.theoretical_bandwidth_bytes_per_s(bus, clk) / 1e9:.0f} GB/s theoretical"
        return ""
    if s["name"].startswith("matmul_peak_"):
        case = next(
            (
                m
                for m in doc.get("measurements", [])
                if m.get("headline") == s["name"] and m["device"] == s["device"]
            ),
            None,
        )
        tel = (case or {}).get("telemetry") or {}
        clocks = tel.get("sm_clock_mhz")
        fam = s["name"].removeprefix("matmul_peak_").split("_")[0]
        per_clk = specs.arch_flop_per_clock_per_sm(spec.arch, fam)
        sms = dev.get("sm_count") or spec.sm_count
        if isinstance(clocks, dict) and per_clk:
            held = clocks["median"]
            peak = specs.tensor_peak_flop_per_s(sms, held, per_clk)
            why = ", ".join(tel.get("throttle_reasons") or []) or "no throttle reason reported"
            return f"held {held:.0f} MHz ({why}): {sms} SMs x {held:.0f} MHz x {per_clk} FLOP/clk = {peak / 1e12:.0f} TF at that clock"
    return ""
