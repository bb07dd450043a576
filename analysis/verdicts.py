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
from analysis.headline import Headline

PASS, WARN = 0.90, 0.75


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


def _good(spec: specs.GPUSpec, kind: str, spec_value: float) -> float:
    """What good nodes achieve: the published figure of this SKU, else the documented default fraction."""
    published = spec.good_figure(kind)
    return published if published is not None else spec_value * specs.default_good_fraction(kind)


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
        h = Headline.try_parse(s["name"])
        if h is None:
            v.note = f"{s['name']}: not a headline this version judges"
            continue
        if h.metric == "sustained":
            v.note = "held under load: judged by the health verdict (analysis.health)"
            continue
        if h.metric == "op_overhead":
            v.note = "seconds per launched op: no sheet figure; the decode projection uses it"
            continue
        if h.metric == "busbw" and h.subject == "all_to_all":
            link, spec_value = busbw_link(doc, s, dev, spec)
            rate = f" ({spec_value / 1e9:.1f} GB/s per direction)" if spec_value else ""
            v.note = (
                f"over {link}{rate}: all-to-all is reported, not judged (its busbw sits below all-reduce's on the "
                "same link, and no good-node figure is published per SKU)"
            )
            continue
        if h.metric == "busbw":
            link, spec_value = busbw_link(doc, s, dev, spec)
            kind = "link"
            if spec_value is None:
                v.note = f"over {link}: no sheet figure to judge it against"
                continue
        else:
            link = ""
            kind, spec_value = _spec_for(h, spec, dev)
        if spec_value is None:
            v.note = f"{spec.name} has no sheet figure for {s['name']}"
            continue
        v.spec, v.ratio = spec_value, s["value"] / spec_value
        v.good = _good(spec, kind, spec_value)
        v.verdict = judge(s["value"], v.good)
        v.note = _explain(doc, s, h, dev, spec)
        if link:
            v.note = f"over {link}: {spec_value / 1e9:.1f} GB/s per direction" + (
                f"; {v.note}" if v.note else ""
            )
            if link.startswith("NVLink") and v.ratio > 1.0:
                # NVLink SHARP (NVLS): the NVSwitches reduce in the fabric, so each GPU sends its data once and
                # busbw reads above the per-direction rate (470-480 GB/s on 8x H100/H200, nccl-tests #212)
                v.note += "; above the per-direction rate: in-switch reduction (NVLink SHARP / NVLS), healthy"
    return out


def busbw_link(
    doc: dict[str, Any], s: dict[str, Any], dev: dict[str, Any], spec: specs.GPUSpec
) -> tuple[str, float | None]:
    """The link a collective figure travelled (from the run's cases), and that link's per-direction rate.

    NVLink: the sheet's NVLink rate (or generation x active links from NVML); PCIe: the card's PCIe generation
    and width (NVML's maximum, else the sheet's host bus), so a healthy PCIe node is not judged against an
    NVLink it does not have; more ranks than this host's GPUs: the network, which no GPU sheet describes.
    """
    case = next(
        (
            m
            for m in doc.get("measurements", [])
            if m.get("headline") == s["name"] and m["device"] == s["device"]
        ),
        None,
    )
    params = (case or {}).get("params", {})
    label, world, nodes = str(params.get("link") or ""), params.get("world_size"), params.get("nodes")
    local = (doc.get("host") or {}).get("cuda_devices")
    if isinstance(nodes, int):  # the launcher said how many nodes the ranks spanned
        if nodes > 1:
            return f"the network ({nodes} nodes)", None
    elif isinstance(world, int) and isinstance(local, int) and 0 < local < world:
        # without that, more ranks than this process sees GPUs reads as several nodes (under srun
        # --gpus-per-task a task sees one GPU of its node: hence the launchers record `nodes`)
        return "the network (more ranks than this node's GPUs)", None
    nv = dev.get("nvml") if isinstance(dev.get("nvml"), dict) else {}
    if label.startswith("NVLink"):
        gen = label.split()[1] if len(label.split()) > 1 else "?"
        if "NVLink" in spec.link and spec.link_bytes_per_s_per_direction:
            return f"NVLink {gen}", spec.link_bytes_per_s_per_direction
        links = (nv.get("nvlink") or {}).get("active_links") if isinstance(nv.get("nvlink"), dict) else None
        rate = specs.nvlink_bytes_per_s_per_direction(int(gen), links) if gen.isdigit() and links else None
        return f"NVLink {gen}", rate
    if label.startswith("xGMI"):  # AMD Infinity Fabric between the GPUs (probes.amd.pair_link)
        rate = spec.link_bytes_per_s_per_direction
        sheet = f"{rate / 1e9:.0f} GB/s per direction on the sheet, " if rate else ""
        return f"xGMI ({sheet}not judged: no published good-node RCCL figure yet)", None
    if label.startswith("PCIe"):
        gen, width = nv.get("pcie_gen_max"), nv.get("pcie_width_max")
        if not isinstance(gen, int):
            gen = spec.pcie_generation
        if not isinstance(width, int):
            width = 16
        rate = specs.pcie_bytes_per_s_per_direction(gen, width) if gen else None
        return f"PCIe Gen{gen} x{width}", rate
    return f"an unknown link ({label or 'not recorded'})", None


def _spec_for(h: Headline, spec: specs.GPUSpec, dev: dict[str, Any]) -> tuple[str, float | None]:
    """The resource a headline is judged as, and the sheet's figure for it (collectives: `busbw_link`)."""
    if h.metric == "dram":
        return "memory", spec.memory_bytes_per_s
    if h.metric == "matmul_peak":
        return h.resource, spec.flop_per_s(h.resource)
    if h.metric != "host_link":  # a metric with no sheet figure is never judged against another one
        return h.metric, None
    gen = (dev.get("nvml") or {}).get("pcie_gen_max") if isinstance(dev.get("nvml"), dict) else None
    if not isinstance(gen, int):
        gen = spec.pcie_generation
    per_dir = specs.pcie_bytes_per_s_per_direction(gen) if gen else None
    if per_dir and h.subject == "bidir":
        per_dir *= 2
    return "host", per_dir


def _explain(
    doc: dict[str, Any], s: dict[str, Any], h: Headline, dev: dict[str, Any], spec: specs.GPUSpec
) -> str:
    """The card's own view: theoretical bandwidth from NVML, tensor peak at the clock held during the case."""
    nv = dev.get("nvml") if isinstance(dev.get("nvml"), dict) else {}
    if h.metric == "dram":
        bus, clk = nv.get("memory_bus_width_bits"), nv.get("memory_clock_max_mhz")
        if isinstance(bus, int) and isinstance(clk, (int, float)):
            return f"NVML: {bus}-bit bus x {clk} MHz -> {specs.theoretical_bandwidth_bytes_per_s(bus, clk) / 1e9:.0f} GB/s theoretical"
        return ""
    if h.metric == "matmul_peak":
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
        per_clk = spec.flop_per_clock_per_sm(h.resource)
        sms = dev.get("sm_count") or spec.sm_count
        if isinstance(clocks, dict) and per_clk:
            held = clocks["median"]
            peak = specs.tensor_peak_flop_per_s(sms, held, per_clk)
            why = ", ".join(tel.get("throttle_reasons") or []) or "no throttle reason reported"
            return f"held {held:.0f} MHz ({why}): {sms} SMs x {held:.0f} MHz x {per_clk} FLOP/clk = {peak / 1e12:.0f} TF at that clock"
    return ""
