"""Export a run's calibrated profile for capacity planners: llm-analysis's GPU config, or gpuprobe's own JSON.

llm-analysis (github.com/cli99/llm-analysis) describes a GPU by sheet figures and applies efficiencies of its
own; ours are measured, so pass `flops_efficiency=1.0, hbm_memory_efficiency=1.0` to its `infer()` with this
file. Fields it needs that a run cannot measure are filled and said so in `_notes`: peak_i4 = 2 x peak_i8
(no INT4 probe); inter-node bandwidth = the host-link (PCIe) figure, the bus the NIC sits on.

    python -m analysis export RUN.json --format llm-analysis -o planners/
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from analysis import specs
from analysis.collectives import curves
from analysis.hardware import default_pcie_bytes_per_s, profile_from_run
from analysis.headline import Headline, headlines


def _host_link(doc: dict[str, Any]) -> float | None:
    wanted = Headline.host_link("h2d", "pinned")
    vals = [s["value"] for h, s in headlines(doc.get("summary", []), "host_link") if h == wanted]
    return max(vals) if vals else None


def llm_analysis_gpu(doc: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The run as an llm-analysis GPU config (its JSON keys and units: GB, GB/s, TFLOPS, seconds)."""
    hw = profile_from_run(doc)
    device = (doc.get("devices") or [{}])[0]
    key = specs.lookup(device.get("name", ""))
    notes = []
    ar = [c for c in curves(doc) if c.op == "all_reduce"]
    if hw.link_bytes_per_s:
        intra, latency = hw.link_bytes_per_s, hw.allreduce_latency_s
        notes.append("intra-node: measured all-reduce busbw plateau and latency floor")
    else:
        spec_link = specs.get(key).link_bytes_per_s_per_direction if key else None
        intra = spec_link or _host_link(doc) or default_pcie_bytes_per_s(None)
        latency = specs.defaults()["allreduce_latency_s"]
        notes.append("intra-node: not measured (one device?); spec link, else host link, else PCIe 4.0 x16")
    i8 = max(hw.flop_per_s.get("int8", 0.0), hw.flop_per_s.get("fp8", 0.0)) or 2 * hw.compute("bf16")
    inter = _host_link(doc) or default_pcie_bytes_per_s(None)
    notes += [
        "peak_i4 = 2 x peak_i8: no INT4 probe",
        "inter-node: host-link (PCIe) figure, not a NIC measurement",
    ]
    slug = re.sub(r"[^a-z0-9]+", "-", device.get("name", "gpu").lower()).strip("-")
    return {
        "name": name or f"gpuprobe-{slug}",
        "mem_per_GPU_in_GB": hw.memory_bytes / 1e9,
        "hbm_bandwidth_in_GB_per_sec": hw.bandwidth_bytes_per_s / 1e9,
        "intra_node_bandwidth_in_GB_per_sec": intra / 1e9,
        "intra_node_min_message_latency": latency,
        "peak_fp16_TFLOPS": max(hw.flop_per_s.get("bf16", 0.0), hw.flop_per_s.get("fp16", 0.0)) / 1e12,
        "peak_i8_TFLOPS": i8 / 1e12,
        "peak_i4_TFLOPS": 2 * i8 / 1e12,
        "inter_node_bandwidth_in_GB_per_sec": inter / 1e9,
        "_notes": notes + ([f"all-reduce curve: {len(ar[0].sizes_bytes)} sizes"] if ar else []),
    }


def gpuprobe_profile(doc: dict[str, Any]) -> dict[str, Any]:
    """Our own profile: the measured ceilings, the roofline fit and the collective curves, SI units."""
    from analysis.hardware import describe
    from analysis.roofline import from_run

    hw = profile_from_run(doc)
    roof = from_run(doc)
    return {
        "schema": "gpuprobe.profile/1",
        "source_run": doc.get("started_utc"),
        "host": doc.get("host", {}).get("hostname"),
        "device": (doc.get("devices") or [{}])[0].get("name"),
        "profile": describe(hw),
        "gemm_efficiency_by_m": roof.efficiency_by_m if roof else {},
        "collective_curves": [
            {
                "op": c.op,
                "dtype": c.dtype,
                "world_size": c.world_size,
                "sizes_bytes": list(c.sizes_bytes),
                "seconds": list(c.seconds_at),
            }
            for c in curves(doc)
        ],
    }


def write(doc: dict[str, Any], fmt: str, out_dir: Path) -> tuple[Path, list[str]]:
    """Write the export; returns its path and notes for the user (llm-analysis reads every file in its
    config folder as a config, so the notes are printed, not written beside it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "prometheus":
        from analysis import prometheus

        return prometheus.write(doc, out_dir), []
    if fmt == "llm-analysis":
        cfg = llm_analysis_gpu(doc)
        notes = cfg.pop("_notes")
        path = out_dir / f"{cfg['name']}.json"
        path.write_text(json.dumps(cfg, indent=4) + "\n")
        return path, notes
    prof = gpuprobe_profile(doc)
    path = out_dir / "gpuprobe-profile.json"
    path.write_text(json.dumps(prof, indent=1, default=str) + "\n")
    return path, []
