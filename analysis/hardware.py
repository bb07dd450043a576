"""What one GPU (or CPU) delivers to each part of a decode step: measured by a run, or the spec sheet x the
database's published microbenchmark figures (analysis/data/gpus.toml [decode]), or the sheet itself (ideal).

    from analysis.hardware import profile_from_run, profile_from_spec
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from analysis import specs
from analysis.collectives import Curve, curves
from analysis.engines import LAUNCH_MODES
from analysis.formats import ELEMENT_BYTES, ProjectionError
from analysis.formulas import bus_bandwidth, interp_log_x
from analysis.headline import compute_family, dtype_family, headlines
from analysis.specs import GPUSpec


@dataclass
class HardwareProfile:
    """What one GPU (or CPU) delivers to each part of a decode step (see the module docstring)."""

    name: str
    source: str
    memory_bytes: float
    bandwidth_bytes_per_s: float  # copy bandwidth: the roof of every memory-bound part
    flop_per_s: dict[str, float]  # per compute family: fp32, bf16, fp16, fp8, int8
    link_bytes_per_s: float | None  # per direction, achievable all-reduce busbw
    allreduce_latency_s: float
    allreduce_curve: Curve | None = None
    alltoall_curve: Curve | None = None  # measured all-to-all (expert parallelism's dispatch and combine)
    # GEMMs the node measured: (n, k, format) -> [(m, seconds)]
    measured_gemm: dict[tuple[int, int, str], list[tuple[int, float]]] = field(default_factory=dict)
    # fraction of the roofline a GEMM of a format reaches at M (measured on the node, or the database's)
    gemm_fraction: Callable[[str, int], float] = field(default=lambda fmt, m: 1.0)
    op_seconds: dict[str, float] = field(default_factory=dict)  # per launch mode: seconds per small op
    # the host time per small op of an eager step, measured inside real decode steps (probes.decode): batch ->
    # seconds per op; where present it is the eager per-op cost (it includes the real ops' own work)
    eager_op_by_batch: list[tuple[int, float]] = field(default_factory=list)
    link_kind: str = "pcie"  # nvlink (or another GPU fabric: xGMI), pcie, or loopback (a CPU run)
    ideal: bool = False  # 100 % of the sheet and no overheads or host time: the physical bound
    asynchronous: bool = True  # a GPU: kernels run while the host issues more (False: a CPU run)
    gemm_latency_s: float = (
        0.0  # fixed time of a GEMM kernel the node did not measure, on top of its roofline
    )
    prefill_factor: float = (
        1.0  # a prefill's time over its GEMMs' and attention's roofline (gpus.toml [decode])
    )
    attention: dict[str, Curve] = field(default_factory=dict)  # per KV dtype: KV bytes -> seconds
    # where no attention curve was measured: the fraction of the copy bandwidth decode attention reaches, by KV
    # dtype and tokens per request
    attention_fraction: Callable[[str, int], float] = field(default=lambda kv, tokens: 1.0)

    def op_s(self, launch: str, batch: int, engine_op_s: float | None = None) -> float:
        """Seconds per small op in a launch mode at a batch: an eager engine's own published per-op cost, else
        the eager cost measured inside real steps (probes.decode), else the mode's microbenchmark figure."""
        if self.ideal:
            return 0.0
        if launch == "eager" and engine_op_s is not None:
            return engine_op_s
        if launch == "eager" and self.eager_op_by_batch:
            return interp_log_x(dict(self.eager_op_by_batch), batch)
        return self.op_seconds.get(launch, 0.0)

    def compute(self, family: str) -> float:
        if family in self.flop_per_s:
            return self.flop_per_s[family]
        return self.flop_per_s.get("bf16") or self.flop_per_s.get("fp16") or max(self.flop_per_s.values())

    def allreduce_s(self, size_bytes: float, tp: int, custom_latency_s: float | None = None) -> float:
        """One all-reduce of `size_bytes` over `tp` GPUs: the measured curve, else latency + bytes over the link
        (an engine's custom one-shot kernel sets the latency where a GPU fabric joins the GPUs)."""
        if tp <= 1:
            return 0.0
        if self.allreduce_curve is not None and self.allreduce_curve.world_size == tp:
            return self.allreduce_curve.seconds(size_bytes)
        if not self.link_bytes_per_s:
            raise ProjectionError(f"{self.name}: no link bandwidth to run tensor parallelism over")
        latency = self.allreduce_latency_s
        if custom_latency_s is not None and self.link_kind == "nvlink":
            latency = custom_latency_s
        # busbw = algbw * 2(t-1)/t  =>  t = latency + S * 2(t-1)/t / busbw
        return latency + size_bytes * bus_bandwidth("all_reduce", 1.0, tp) / self.link_bytes_per_s

    def alltoall_s(self, size_bytes: float, n: int) -> float:
        """One all-to-all of `size_bytes` per rank (the whole send buffer, nccl-tests' S) over `n` GPUs: the
        measured curve, else latency + the (n-1)/n of it that leaves each GPU over the link."""
        if n <= 1:
            return 0.0
        if self.alltoall_curve is not None and self.alltoall_curve.world_size == n:
            return self.alltoall_curve.seconds(size_bytes)
        if not self.link_bytes_per_s:
            raise ProjectionError(f"{self.name}: no link bandwidth to run expert parallelism over")
        return (
            self.allreduce_latency_s
            + size_bytes * bus_bandwidth("all_to_all", 1.0, n) / self.link_bytes_per_s
        )

    def attention_s(self, kv: str, nbytes: float, flops: float, tokens: int = 4096) -> float:
        curve = self.attention.get(kv)
        if curve is None and self.attention:  # another KV dtype measured: the same kernel, other bytes
            curve = max(self.attention.values(), key=lambda c: c.sizes_bytes[-1])
        if curve is not None:
            mem = curve.seconds(nbytes)
        else:
            mem = nbytes / (self.bandwidth_bytes_per_s * self.attention_fraction(kv, tokens))
        return max(mem, flops / self.compute("bf16"))


def default_pcie_bytes_per_s(generation: int | None) -> float:
    """Per-direction x16 rate of a PCIe generation; the database's default generation where none is known."""
    rate = specs.pcie_bytes_per_s_per_direction(generation) if generation else None
    return rate or specs.pcie_bytes_per_s_per_direction(specs.defaults()["host_pcie_generation"])


def _fraction_table(table: dict[str, Any]) -> Callable[[str, int], float]:
    """A format's fraction of the roofline at M from {format: {M: fraction}}."""

    def fraction(fmt: str, m: int) -> float:
        points = table.get(fmt) or table.get(compute_family(fmt)) or table.get("bf16")
        return interp_log_x(points, m) if points else 1.0

    return fraction


def _attention_table(d: dict[str, Any]) -> Callable[[str, int], float]:
    """Decode attention's fraction of the copy bandwidth from the database's fraction of the sheet."""

    def fraction(kv: str, tokens: int) -> float:
        f = interp_log_x(d["attention_fraction"], max(tokens, 1)) / d["copy_fraction"]
        return f * (d["attention_fp8_factor"] if ELEMENT_BYTES.get(kv, 2.0) < 2 else 1.0)

    return fraction


def profile_from_spec(spec: GPUSpec, ideal: bool = False) -> HardwareProfile:
    """The sheet x the database's published microbenchmark fractions (or 100 % and no overheads: ideal)."""
    d = specs.decode_defaults(spec)
    flops = {}
    for fam in ("fp32", "bf16", "fp16", "fp8", "fp4", "int8"):
        peak = spec.flop_per_s(fam)
        if peak:
            flops[fam] = peak * (
                1.0 if ideal else d["compute_fraction"].get(fam, d["compute_fraction"]["bf16"])
            )
    link = spec.link_bytes_per_s_per_direction
    link_kind = "nvlink" if link else "pcie"
    if link is None:  # no NVLink: all-reduce goes over PCIe
        link = default_pcie_bytes_per_s(spec.pcie_generation)
    copy = 1.0 if ideal else d["copy_fraction"]
    return HardwareProfile(
        name=spec.key,
        source="spec sheet (100 %, the physical bound)"
        if ideal
        else "spec sheet x published microbenchmark fractions",
        memory_bytes=spec.memory_bytes,
        bandwidth_bytes_per_s=spec.memory_bytes_per_s * copy,
        flop_per_s=flops,
        link_bytes_per_s=link * (1.0 if ideal else d["link_fraction"]),
        allreduce_latency_s=0.0 if ideal else d["allreduce_latency_s"][link_kind],
        gemm_fraction=(lambda fmt, m: 1.0) if ideal else _fraction_table(d["gemm_fraction"]),
        op_seconds={m: 0.0 for m in LAUNCH_MODES} if ideal else dict(d["op_seconds"]),
        gemm_latency_s=0.0 if ideal else d["gemm_latency_s"],
        prefill_factor=1.0 if ideal else d["prefill_factor"],
        attention_fraction=(lambda kv, tokens: 1.0) if ideal else _attention_table(d),
        link_kind=link_kind,
        ideal=ideal,
    )


def profile_from_run(doc: dict[str, Any], name: str = "run") -> HardwareProfile:
    """Measured parts of a run document: DRAM plateau, matmul peaks, decode GEMMs per format, per-op
    overhead, attention, the all-reduce curve; the database's defaults for what it did not measure."""
    summary = doc.get("summary", [])
    dram = [s["value"] for _h, s in headlines(summary, "dram") if s["unit"] == "bytes_per_s"]
    if not dram:
        raise ProjectionError(f"{name}: the run has no DRAM bandwidth figure (run the bandwidth probe)")
    flops: dict[str, float] = {}
    for h, s in headlines(summary, "matmul_peak"):
        flops[h.resource] = max(flops.get(h.resource, 0.0), s["value"])
    if not flops:
        raise ProjectionError(f"{name}: the run has no matmul figure (run the matmul probe)")
    device = (doc.get("devices") or [{}])[0]
    memory = device.get("memory_total_bytes")
    if not isinstance(memory, (int, float)):
        raise ProjectionError(f"{name}: the run does not record the device memory")
    d = specs.decode_defaults(None)
    ar = [c for c in curves(doc) if c.op == "all_reduce"]
    curve = max(ar, key=lambda c: c.sizes_bytes[-1]) if ar else None
    a2a = [c for c in curves(doc) if c.op == "all_to_all"]
    link = curve.plateau_algbw() * bus_bandwidth("all_reduce", 1.0, curve.world_size) if curve else None
    measured: dict[tuple[int, int, str], list[tuple[int, float]]] = {}
    attn: dict[str, list[tuple[int, float]]] = {}
    host_per_op: dict[int, list[float]] = {}  # batch -> seconds per small op inside real steps
    for m in doc.get("measurements", []):
        p = m["params"]
        if m["status"] != "ok":
            continue
        if m["probe"] == "matmul" and p.get("kind") == "decode":
            measured.setdefault((p["n"], p["k"], dtype_family(p["dtype"])), []).append(
                (p["m"], m["timing"]["stats"]["median_s"])
            )
        if m["probe"] == "decode" and p.get("kind") == "step" and p.get("host_seconds_per_op"):
            host_per_op.setdefault(p["batch"], []).append(p["host_seconds_per_op"])
        if m["probe"] == "decode" and p.get("kind") == "attention":
            attn.setdefault(p.get("kv_dtype", "bf16"), []).append(
                (p["bytes_moved"], m["timing"]["stats"]["median_s"])
            )
    for pts in measured.values():
        pts.sort()
    ops = {h.subject: s["value"] for h, s in headlines(summary, "op_overhead")}
    from analysis.roofline import from_run

    roof = from_run(doc)
    default_fraction = _fraction_table(d["gemm_fraction"])
    return HardwareProfile(
        name=f"{device.get('name', '?')} ({name})",
        source="measured (run document)",
        memory_bytes=float(memory),
        bandwidth_bytes_per_s=max(dram),
        flop_per_s=flops,
        link_bytes_per_s=link,
        allreduce_latency_s=curve.latency_floor_s() if curve else d["allreduce_latency_s"]["pcie"],
        allreduce_curve=curve,
        alltoall_curve=max(a2a, key=lambda c: c.sizes_bytes[-1]) if a2a else None,
        measured_gemm=measured,
        gemm_fraction=(
            lambda fmt, m: (
                roof.gemm_efficiency(m, fmt) if fmt in roof.efficiency_by_m else default_fraction(fmt, m)
            )
        )
        if roof
        else default_fraction,
        # measured where the run measured it (graph: CUDA only); the database's figure for the rest
        op_seconds={m: ops.get(m, d["op_seconds"][m]) for m in LAUNCH_MODES},
        attention={kv: _curve("attention", kv, pts) for kv, pts in attn.items()},
        attention_fraction=_attention_table(d),
        eager_op_by_batch=sorted((b, sum(v) / len(v)) for b, v in host_per_op.items()),
        asynchronous=device.get("kind") != "cpu",
        prefill_factor=d["prefill_factor"],  # the run measured GEMMs, not a prompt-sized step's other work
    )


def _curve(op: str, dtype: str, pts: list[tuple[int, float]]) -> Curve:
    pts = sorted(pts)
    return Curve(op, dtype, 1, tuple(int(x) for x, _ in pts), tuple(y for _, y in pts))


def describe(hw: HardwareProfile) -> dict[str, Any]:
    d = asdict(hw)
    for key in ("measured_gemm", "gemm_fraction", "attention"):
        d.pop(key, None)
    d["allreduce_curve"] = (
        None if hw.allreduce_curve is None else f"{hw.allreduce_curve.op} x{hw.allreduce_curve.world_size}"
    )
    d["attention"] = sorted(hw.attention)
    return d
