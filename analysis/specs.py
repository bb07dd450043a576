"""The spec database (analysis/data/gpus.toml): data-sheet figures per SKU, and the physics that checks them.

Every figure is dense and decimal; link figures say their direction. `lookup()` maps an NVML or torch
device name to a SKU key, most specific pattern first, and gives None for a device it does not know: an
unknown SKU is said plainly, never guessed. Two derivations let a sheet be checked against the card itself:

    tensor peak      = SMs x clock x dense FLOP per clock per SM     (132 x 1.83 GHz x 4096 = 989.4 TF, H100 SXM)
    memory bandwidth = bus width / 8 x memory clock x 2 (DDR)        (5120 bit x 1593 MHz -> 2039 GB/s, A100 80GB)

With NVML's SM count and the SM clock held *while the matmul ran*, the first gives the peak at that clock.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from analysis.cli import BadInput
from analysis.headline import BLOCK_SCALED, dtype_family

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SPECS_PATH = Path(__file__).resolve().parent / "data" / "gpus.toml"


class UnknownGPU(BadInput, KeyError):
    """A GPU key that is not in the spec database (a KeyError, and bad input: one line, exit 2)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown GPU"


@dataclass(frozen=True)
class GPUSpec:
    key: str
    name: str
    arch: str
    memory: str
    memory_gb: float
    memory_bandwidth_gb_s: float
    sm_count: int
    source: str
    bf16_tflops: float | None = None
    fp16_tflops: float | None = None
    fp8_tflops: float | None = None
    fp4_tflops: float | None = None  # NVFP4 / MXFP4 (Blackwell), dense
    tf32_tflops: float | None = None
    fp32_tflops: float | None = None
    int8_tops: float | None = None
    tensor_clock_mhz: float | None = None  # the clock the sheet's tensor peak is quoted at
    max_clock_mhz: float | None = None  # the highest SM clock, where the sheet gives it
    tensor_rate_capped: bool = False  # a capped part: the peak is not SMs x clock x the arch's rate
    l2_mb: float | None = None
    link: str = "none"
    link_gb_s: float | None = None  # total of both directions
    link_direction: str = ""
    host_bus: str = ""
    tdp_w: float | None = None
    match: tuple[str, ...] = field(default=())
    good: dict[str, float] = field(default_factory=dict)  # published good-node figures (GB/s, TFLOPS)
    flop_per_clock_per_sm_override: dict[str, float] = field(default_factory=dict)

    @property
    def memory_bytes(self) -> float:
        """Capacity in bytes: the sheets' GB of HBM and GDDR are binary (an 80 GB card has 80 GiB)."""
        return self.memory_gb * 2**30

    @property
    def memory_bytes_per_s(self) -> float:
        return self.memory_bandwidth_gb_s * 1e9

    @property
    def link_bytes_per_s_per_direction(self) -> float | None:
        return None if self.link_gb_s is None else self.link_gb_s * 1e9 / 2

    def flop_per_s(self, dtype: str) -> float | None:
        """Dense peak for a matmul dtype key (fp32, tf32, fp16, bf16, fp8*, int8), FLOP/s; None if none."""
        base = dtype_family(dtype)
        base = BLOCK_SCALED.get(base, base)
        tflops = {
            "fp32": self.fp32_tflops,
            "tf32": self.tf32_tflops,
            "fp16": self.fp16_tflops,
            "bf16": self.bf16_tflops,
            "fp8": self.fp8_tflops,
            "fp4": self.fp4_tflops,
            "int8": self.int8_tops,
        }.get(base)
        return None if tflops is None else tflops * 1e12

    def good_figure(self, resource: str) -> float | None:
        """What good nodes of this SKU achieve (published), SI units: resource is memory or a dtype family."""
        if resource == "memory":
            v = self.good.get("memory_gb_s")
            return None if v is None else v * 1e9
        v = self.good.get(f"{resource}_tflops")
        return None if v is None else v * 1e12

    def flop_per_clock_per_sm(self, dtype: str) -> float | None:
        """Dense FLOP per clock per SM of this SKU for a dtype key: its architecture's, or the row's override."""
        fam = dtype_family(dtype)
        if self.tensor_rate_capped:
            return None
        if fam in self.flop_per_clock_per_sm_override:
            return self.flop_per_clock_per_sm_override[fam]
        return arch_flop_per_clock_per_sm(self.arch, fam)

    @property
    def pcie_generation(self) -> int | None:
        """The host bus generation from the sheet ("PCIe 5.0 x16" -> 5); None for another bus."""
        m = re.match(r"PCIe (\d+)", self.host_bus)
        return int(m.group(1)) if m else None


@lru_cache(maxsize=1)
def _raw() -> dict[str, Any]:
    with open(SPECS_PATH, "rb") as fh:
        return tomllib.load(fh)


def all_gpus() -> dict[str, GPUSpec]:
    out = {}
    for key, row in _raw()["gpus"].items():
        fields = {k: v for k, v in row.items() if k != "flop_per_clock_per_sm"}
        out[key] = GPUSpec(
            key=key,
            **{**fields, "match": tuple(row.get("match", ()))},
            flop_per_clock_per_sm_override=dict(row.get("flop_per_clock_per_sm", {})),
        )
    return out


def get(key: str) -> GPUSpec:
    gpus = all_gpus()
    if key not in gpus:
        raise UnknownGPU(f"unknown GPU key {key!r} (known: {', '.join(gpus)})")
    return gpus[key]


def arch_flop_per_clock_per_sm(arch: str, dtype: str = "fp16") -> float | None:
    """Dense FLOP per clock per SM (CU) of an architecture for a dtype key; None where it has no such unit."""
    row = _raw()["arch"].get(arch)
    if row is None:
        return None
    return row["flop_per_clock_per_sm"].get(dtype_family(dtype))


def shared_memory_per_block_bytes(arch: str) -> int | None:
    """The most shared memory (LDS on AMD) one thread block may use on an architecture, where the DB says."""
    row = _raw()["arch"].get(arch)
    kib = row.get("shared_memory_per_block_kib") if row else None
    return int(kib) * 1024 if kib else None


def cuda_min_capability(dtype: str) -> tuple[int, int] | None:
    """The lowest NVIDIA compute capability whose matrix units run `dtype`; None when any GPU runs it."""
    v = _raw()["capability"]["cuda"].get(dtype_family(dtype))
    if v is None:
        return None
    major, minor = v.split(".")
    return int(major), int(minor)


def rocm_archs(feature: str) -> tuple[str, ...] | None:
    """AMD gfx prefixes that run `feature` (a dtype family, or fp8_fnuz); None when every arch runs it."""
    v = _raw()["capability"]["rocm"].get(feature)
    return None if v is None else tuple(v)


def memory_side_cache_bytes(gfx_arch: str) -> int:
    """A memory-side cache in front of DRAM that the L2 size leaves out (AMD Infinity Cache), else 0."""
    return int(_raw()["memory_side_cache_mib"].get(gfx_arch, 0)) << 20


def pcie_bytes_per_s_per_direction(generation: int, width: int = 16) -> float | None:
    """PCIe payload rate per direction for a generation and lane count; None for an unknown generation."""
    per_x16 = _raw()["pcie_x16_per_direction_gb_s"].get(str(generation))
    return None if per_x16 is None else per_x16 * 1e9 * width / 16


def nvlink_bytes_per_s_per_direction(generation: int, links: int = 1) -> float | None:
    """NVLink rate per direction over `links` links of a generation; None for an unknown generation."""
    per_link = _raw()["nvlink_per_link_per_direction_gb_s"].get(str(generation))
    return None if per_link is None else per_link * 1e9 * links


def defaults() -> dict[str, Any]:
    """The database's documented defaults: good-node fractions, projection efficiencies, latencies."""
    return dict(_raw()["defaults"])


def default_efficiency() -> dict[str, float]:
    """Fractions of the sheet a spec-only projection assumes (published microbenchmark figures)."""
    return dict(_raw()["defaults"]["efficiency"])


def decode_defaults(spec: GPUSpec | None) -> dict[str, Any]:
    """The [decode] microbenchmark figures for a GPU (copy fraction by SKU, arch or memory type)."""
    raw = _raw()["decode"]
    eff = default_efficiency()
    copy = raw["copy_fraction"]
    if spec is None:
        fraction = copy["other"]
    elif spec.good.get("memory_gb_s"):
        fraction = spec.good["memory_gb_s"] / spec.memory_bandwidth_gb_s
    else:
        fraction = copy.get(spec.arch, copy.get(spec.memory, copy["other"]))
    compute = {k: v for k, v in eff.items() if k not in ("memory", "link")}
    if spec is not None and spec.good.get("bf16_tflops") and spec.bf16_tflops:
        # a published good-node GEMM figure for this SKU scales every family's default alike
        scale = spec.good["bf16_tflops"] / spec.bf16_tflops / compute["bf16"]
        compute = {k: v * scale for k, v in compute.items()}
    if spec is not None and spec.good.get("fp8_tflops") and spec.fp8_tflops:
        compute["fp8"] = spec.good["fp8_tflops"] / spec.fp8_tflops
    arch = spec.arch if spec is not None else ""
    return {
        "copy_fraction": float(fraction),
        "compute_fraction": compute,
        "link_fraction": float(raw["link_fraction"]),
        "gemm_fraction": {fmt: dict(t) for fmt, t in raw["gemm_fraction"].items()},
        "op_seconds": dict(raw["op_seconds_by_arch"].get(arch, raw["op_seconds"])),
        "gemm_latency_s": float(
            raw["gemm_latency_s"].get(
                arch, raw["gemm_latency_s"].get(spec.memory if spec else "", raw["gemm_latency_s"]["default"])
            )
        ),
        "prefill_factor": float(raw["prefill_factor"]),
        "allreduce_latency_s": dict(raw["allreduce_latency_s"]),
        "attention_fraction": {int(k): float(v) for k, v in raw["attention_fraction"].items()},
        "attention_fp8_factor": float(raw["attention_fp8_factor"]),
    }


def default_good_fraction(resource: str) -> float:
    table = _raw()["defaults"]["good_fraction"]
    return float(table.get(resource, table["other"]))


def lookup(device_name: str) -> str | None:
    """The SKU key for an NVML / torch device name, or None for a device the database does not know."""
    candidates = [(pattern, key) for key, spec in all_gpus().items() for pattern in spec.match]
    for pattern, key in sorted(candidates, key=lambda c: -len(c[0])):
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return key
    return None


def unknown_sku_line(device_name: str) -> str:
    return f"unknown SKU {device_name!r}: no spec sheet in analysis/data/gpus.toml, so no verdict against one"


def tensor_peak_flop_per_s(sm_count: int, clock_mhz: float, flop_per_clock_per_sm: float) -> float:
    """SMs x clock x dense FLOP per clock per SM."""
    return sm_count * clock_mhz * 1e6 * flop_per_clock_per_sm


def theoretical_bandwidth_bytes_per_s(bus_width_bits: int, memory_clock_mhz: float) -> float:
    """Bus width / 8 x memory clock x 2 (data moves on both clock edges), as NVML reports both."""
    return bus_width_bits / 8 * memory_clock_mhz * 1e6 * 2
