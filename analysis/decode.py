"""LLM decode projection: tokens/s, TTFT, KV capacity and $ per million tokens, from what a step costs.

A decode step is a sequence of kernels, and its time is their sum. Per layer, on one of t tensor-parallel
ranks, at batch B and context S:

    GEMMs       qkv, o, gate_up, down at M = B in the weight format: the time the node measured for that
                shape and format (matmul probe, interpolated in M), else bytes / (bandwidth x the format's
                small-M fraction) or FLOPs / (peak x efficiency), whichever is longer
    attention   reads K and V: B x S x 2 x kv_heads/t x head_dim x KV bytes, at the attention bandwidth the
                node measured (decode probe), else bandwidth x the attention fraction
    small ops   norms, RoPE, cache writes, activation: ops per layer x the per-op overhead (eager launch or
                dispatch; per kernel inside a CUDA graph with --cuda-graphs, where engines also fuse them)
    all-reduce  two per layer of B x hidden x 2 bytes: the measured curve, else latency + bytes x 2(t-1)/t / busbw
and once per step the LM head GEMM (weight-only, fp8 and int8 models keep it in bf16, as serving engines do),
the final norm and sampling (ops_head x overhead, B x vocab logits read). Every GEMM also pays at least one
op's overhead (a launch that outlasts a tiny kernel). MoE: every touched expert's weights are read once;
tokens split across them. The step's split is reported: weights (memory-bound GEMMs), KV/attention, compute
(compute-bound GEMMs), overhead, communication.

    output tok/s  = B / step time
    serving total = B x (in + out) / (prefill time + out x step time at the mean context)   (vLLM's count)
    $ / M tokens  = price per GPU-hour x GPUs / output tok/s x 1e6 / 3600

Weight formats: fp32, bf16, fp16, fp8 (W8A8), int8 (W8A8), int8-wo and int4-wo (weight-only, bf16
activations; int4 carries a bf16 scale and zero per `group_size` weights). KV cache: fp32, bf16, fp16, fp8,
int8. Hardware profiles: `--run RUN.json` (measured: every part above that the run measured),
`--gpu KEY` (the sheet x the database's published microbenchmark fractions: analysis/data/gpus.toml
[decode]) or `--gpu KEY --ideal` (100 % of the sheet, no overheads: the bound no real system reaches).

    python -m analysis project --gpu h100-sxm5-80gb --model llama-3.1-8b --dtype int4-wo --cuda-graphs
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from analysis import specs
from analysis.collectives import Curve, curves
from analysis.formulas import bus_bandwidth, gemm_flops
from analysis.headline import compute_family, dtype_family, headlines
from analysis.models import ModelConfig, decode_linears, experts_touched, parameter_count
from analysis.specs import GPUSpec

FORMATS = ("fp32", "bf16", "fp16", "fp8", "int8", "int8-wo", "int4-wo")
KV_DTYPES = ("fp32", "bf16", "fp16", "fp8", "int8")
ELEMENT_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0}
BYTES_PER_WEIGHT = {**ELEMENT_BYTES, "int8-wo": 1.0, "int4-wo": 0.5}  # before scales
GROUP_SIZES = (32, 64, 128, 256)
LAUNCH_MODES = ("eager", "graph", "native")
TORCH_KV_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}

MEMORY_RESERVE = 0.10  # of device memory kept for activations, the CUDA context and fragmentation


class ProjectionError(ValueError):
    """Inputs that cannot be projected (TP not dividing heads, batch <= 0, a run without the figures)."""


def weight_bytes(fmt: str, group_size: int = 128) -> float:
    """Bytes per weight read, scales included: int4-wo adds a bf16 scale and zero per group."""
    return BYTES_PER_WEIGHT[fmt] + (4.0 / group_size if fmt == "int4-wo" else 0.0)


def activation_dtype(fmt: str) -> str:
    return fmt if fmt in ("fp32", "fp16") else "bf16"


def head_format(fmt: str) -> str:
    """The LM head's format: quantized models keep it in 16 bits (vLLM, TensorRT-LLM, AWQ/GPTQ checkpoints)."""
    return fmt if fmt in ("fp32", "bf16", "fp16") else activation_dtype(fmt)


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
    # GEMMs the node measured: (n, k, format) -> [(m, seconds)]
    measured_gemm: dict[tuple[int, int, str], list[tuple[int, float]]] = field(default_factory=dict)
    # fraction of the roofline a GEMM of a format reaches at M (measured on the node, or the database's)
    gemm_fraction: Callable[[str, int], float] = field(default=lambda fmt, m: 1.0)
    op_seconds: dict[str, float] = field(default_factory=dict)  # per launch mode: seconds per small op
    gemm_latency_s: float = (
        0.0  # fixed time of a GEMM kernel the node did not measure, on top of its roofline
    )
    attention: dict[str, Curve] = field(default_factory=dict)  # per KV dtype: KV bytes -> seconds
    # where no attention curve was measured: the fraction of the copy bandwidth decode attention reaches, by KV
    # dtype and tokens per request
    attention_fraction: Callable[[str, int], float] = field(default=lambda kv, tokens: 1.0)
    kernels: dict[str, int] = field(default_factory=dict)  # ops_per_layer / ops_head, eager and graph

    def compute(self, family: str) -> float:
        if family in self.flop_per_s:
            return self.flop_per_s[family]
        return self.flop_per_s.get("bf16") or self.flop_per_s.get("fp16") or max(self.flop_per_s.values())

    def allreduce_s(self, size_bytes: float, tp: int) -> float:
        if tp <= 1:
            return 0.0
        if self.allreduce_curve is not None and self.allreduce_curve.world_size == tp:
            return self.allreduce_curve.seconds(size_bytes)
        if not self.link_bytes_per_s:
            raise ProjectionError(f"{self.name}: no link bandwidth to run tensor parallelism over")
        # busbw = algbw * 2(t-1)/t  =>  t = latency + S * 2(t-1)/t / busbw
        return (
            self.allreduce_latency_s
            + size_bytes * bus_bandwidth("all_reduce", 1.0, tp) / self.link_bytes_per_s
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


def _interp(points: dict[Any, float], x: float) -> float:
    """{x: y} at x, linear in log(x) between points, flat beyond the ends."""
    xs = sorted(int(k) for k in points)
    ys = [float(points[str(k)] if str(k) in points else points[k]) for k in xs]
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    for (x0, y0), (x1, y1) in itertools.pairwise(zip(xs, ys, strict=True)):
        if x0 <= x <= x1:
            return y0 + (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0)) * (y1 - y0)
    return ys[-1]  # pragma: no cover


def _fraction_table(table: dict[str, Any]) -> Callable[[str, int], float]:
    """A format's fraction of the roofline at M from {format: {M: fraction}}."""

    def fraction(fmt: str, m: int) -> float:
        points = table.get(fmt) or table.get(compute_family(fmt)) or table.get("bf16")
        return _interp(points, m) if points else 1.0

    return fraction


def _attention_table(d: dict[str, Any]) -> Callable[[str, int], float]:
    """Decode attention's fraction of the copy bandwidth from the database's fraction of the sheet."""

    def fraction(kv: str, tokens: int) -> float:
        f = _interp(d["attention_fraction"], max(tokens, 1)) / d["copy_fraction"]
        return f * (d["attention_fp8_factor"] if ELEMENT_BYTES.get(kv, 2.0) < 2 else 1.0)

    return fraction


def profile_from_spec(spec: GPUSpec, ideal: bool = False) -> HardwareProfile:
    """The sheet x the database's published microbenchmark fractions (or 100 % and no overheads: ideal)."""
    d = specs.decode_defaults(spec)
    flops = {}
    for fam in ("fp32", "bf16", "fp16", "fp8", "int8"):
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
        attention_fraction=(lambda kv, tokens: 1.0) if ideal else _attention_table(d),
        kernels=dict(d["kernels"]),
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
    link = curve.plateau_algbw() * bus_bandwidth("all_reduce", 1.0, curve.world_size) if curve else None
    measured: dict[tuple[int, int, str], list[tuple[int, float]]] = {}
    attn: dict[str, list[tuple[int, float]]] = {}
    for m in doc.get("measurements", []):
        p = m["params"]
        if m["status"] != "ok":
            continue
        if m["probe"] == "matmul" and p.get("kind") == "decode":
            measured.setdefault((p["n"], p["k"], dtype_family(p["dtype"])), []).append(
                (p["m"], m["timing"]["stats"]["median_s"])
            )
        if m["probe"] == "decode" and p.get("kind") == "attention":
            kv = TORCH_KV_NAMES.get(p.get("kv_dtype", ""), p.get("kv_dtype", ""))
            attn.setdefault(kv, []).append((p["bytes_moved"], m["timing"]["stats"]["median_s"]))
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
        kernels=dict(d["kernels"]),
    )


def _curve(op: str, dtype: str, pts: list[tuple[int, float]]) -> Curve:
    pts = sorted(pts)
    return Curve(op, dtype, 1, tuple(int(x) for x, _ in pts), tuple(y for _, y in pts))


@dataclass(frozen=True)
class Query:
    model: ModelConfig
    weight_dtype: str = "bf16"
    kv_dtype: str | None = None
    tp: int = 1
    input_len: int = 1024
    output_len: int = 256
    price_per_gpu_hour: float | None = None
    group_size: int = 128
    cuda_graphs: bool = False  # shorthand for launch = "graph"
    ops_per_layer: int | None = None  # small ops per layer; None: the database's count for the launch mode
    ops_head: int | None = None
    # how kernels are launched: "eager" (PyTorch: an aten op per kernel, Python and dispatch per op),
    # "graph" (a serving engine's fused kernels replayed from a CUDA graph), "native" (a C++ engine's fused
    # kernels launched one by one, e.g. llama.cpp without graphs); None: graph with cuda_graphs, else eager
    launch: str | None = None

    @property
    def kv(self) -> str:
        return self.kv_dtype or activation_dtype(self.weight_dtype)

    @property
    def compute_dtype(self) -> str:
        return compute_family(self.weight_dtype)

    @property
    def mode(self) -> str:
        return self.launch or ("graph" if self.cuda_graphs else "eager")


@dataclass
class Step:
    seconds: float
    weights_s: float  # GEMMs whose bytes term won (reading weights)
    kv_s: float  # attention over the KV cache
    compute_s: float  # GEMMs whose FLOPs term won
    overhead_s: float  # small ops and the launch floor of tiny kernels
    comm_s: float
    weight_bytes: float
    kv_bytes: float

    @property
    def memory_s(self) -> float:
        return self.weights_s + self.kv_s

    @property
    def bound(self) -> str:
        parts = {
            "memory": self.memory_s,
            "compute": self.compute_s,
            "overhead": self.overhead_s,
            "communication": self.comm_s,
        }
        return max(parts, key=lambda k: parts[k])


def gemm_seconds(
    hw: HardwareProfile, m: int, n: int, k: int, q: Query, fmt: str | None = None
) -> tuple[float, bool]:
    """Time of one GEMM at M = m in `fmt` (the query's weight format), and whether its bytes term set it."""
    fmt = fmt or q.weight_dtype
    act = ELEMENT_BYTES[activation_dtype(fmt)]
    flops = gemm_flops(m, n, k)
    nbytes = m * k * act + n * k * weight_bytes(fmt, q.group_size) + m * n * act
    mem_s = nbytes / hw.bandwidth_bytes_per_s
    comp_s = flops / hw.compute(compute_family(fmt))
    pts = hw.measured_gemm.get((n, k, fmt))
    if pts and pts[0][0] <= m <= pts[-1][0]:
        return _interp_log(pts, m), mem_s >= comp_s  # measured on this node: small-M inefficiency included
    return hw.gemm_latency_s + max(mem_s, comp_s) / hw.gemm_fraction(fmt, m), mem_s >= comp_s


def _interp_log(pts: list[tuple[int, float]], x: float) -> float:
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        if x0 <= x <= x1:
            if x1 == x0:
                return y0
            f = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return math.exp(math.log(y0) + f * (math.log(y1) - math.log(y0)))
    return pts[0][1]


def decode_step(hw: HardwareProfile, q: Query, batch: int, context: int) -> Step:
    cfg, t = q.model, q.tp
    op_s = hw.op_seconds.get(q.mode, 0.0)
    ops_layer = (
        q.ops_per_layer if q.ops_per_layer is not None else hw.kernels.get(f"ops_per_layer_{q.mode}", 0)
    )
    ops_head = q.ops_head if q.ops_head is not None else hw.kernels.get(f"ops_head_{q.mode}", 0)
    weights_s = comp_s = overhead_s = weight_total = 0.0
    for lin in decode_linears(cfg, t):
        fmt = head_format(q.weight_dtype) if lin.op == "lm_head" else q.weight_dtype
        if lin.op in ("gate_up", "down") and cfg.experts > 1:
            # every touched expert's weights are read once; each token runs k experts' FLOPs
            count = experts_touched(cfg, batch) * cfg.layers
            m = max(1, round(batch * cfg.experts_per_token / experts_touched(cfg, batch)))
        else:
            count, m = lin.per_step, batch
        s, is_mem = gemm_seconds(hw, m, lin.n, lin.k, q, fmt)
        floor = max(s, op_s)  # a kernel shorter than its launch waits for the launch
        overhead_s += count * (floor - s)
        weight_total += count * lin.n * lin.k * weight_bytes(fmt, q.group_size)
        if is_mem:
            weights_s += count * s
        else:
            comp_s += count * s
    kv_heads = max(1, cfg.kv_heads // t)
    kv_layer = batch * context * 2 * kv_heads * cfg.head_dim * ELEMENT_BYTES[q.kv]
    attn_flops = 4 * batch * context * (cfg.heads // t) * cfg.head_dim
    kv_s = cfg.layers * max(hw.attention_s(q.kv, kv_layer, attn_flops, context), op_s)
    logits = batch * cfg.vocab / t * 4.0  # fp32 logits written, then read by sampling
    overhead_s += (cfg.layers * ops_layer + ops_head) * op_s + logits / hw.bandwidth_bytes_per_s
    comm_s = 2 * cfg.layers * hw.allreduce_s(batch * cfg.hidden * 2.0, t)
    total = weights_s + kv_s + comp_s + overhead_s + comm_s
    return Step(total, weights_s, kv_s, comp_s, overhead_s, comm_s, weight_total, kv_layer * cfg.layers)


def prefill_s(hw: HardwareProfile, q: Query, batch: int) -> float:
    """Prefill of `batch` prompts of input_len tokens: each GEMM at M = batch x input_len, causal attention."""
    cfg, t, n_tok = q.model, q.tp, batch * q.input_len
    total = 0.0
    for lin in decode_linears(cfg, t):
        per = (
            cfg.layers * cfg.experts_per_token
            if lin.op in ("gate_up", "down") and cfg.experts > 1
            else lin.per_step
        )
        m = n_tok if lin.op != "lm_head" else batch  # only the last position of each prompt needs logits
        fmt = head_format(q.weight_dtype) if lin.op == "lm_head" else q.weight_dtype
        total += per * gemm_seconds(hw, m, lin.n, lin.k, q, fmt)[0]
    total += batch * 2 * q.input_len**2 * (cfg.heads // t) * cfg.head_dim * cfg.layers / hw.compute("bf16")
    total += 2 * cfg.layers * hw.allreduce_s(n_tok * cfg.hidden * 2.0, t)
    return total


def weights_bytes_per_gpu(q: Query) -> float:
    cfg = q.model
    head = cfg.vocab * cfg.hidden
    body = parameter_count(cfg) - head * (1 if cfg.tied_embeddings else 2)
    embed_and_head = (
        head * (1 if cfg.tied_embeddings else 2) * ELEMENT_BYTES[activation_dtype(q.weight_dtype)]
    )
    return (body * weight_bytes(q.weight_dtype, q.group_size) + embed_and_head) / q.tp


def kv_bytes_per_request_per_gpu(q: Query) -> float:
    cfg = q.model
    per_token = 2 * cfg.layers * max(1, cfg.kv_heads // q.tp) * cfg.head_dim * ELEMENT_BYTES[q.kv]
    return per_token * (q.input_len + q.output_len)


def max_concurrency(hw: HardwareProfile, q: Query) -> int:
    free = hw.memory_bytes * (1 - MEMORY_RESERVE) - weights_bytes_per_gpu(q)
    return max(0, math.floor(free / kv_bytes_per_request_per_gpu(q)))


def weight_read_floor_s(weight_bytes: float, bandwidth_bytes_per_s: float) -> float:
    """Batch-1 decode cannot beat reading every weight once: weight bytes / bandwidth."""
    return weight_bytes / bandwidth_bytes_per_s


def cost_per_million_tokens(price_per_gpu_hour: float, gpus: int, tokens_per_s: float) -> float:
    return price_per_gpu_hour * gpus / tokens_per_s * 1e6 / 3600


def check_query(q: Query) -> None:
    """ProjectionError (one line) for a format, KV dtype or group size the model does not know."""
    if q.weight_dtype not in FORMATS:
        raise ProjectionError(f"--dtype {q.weight_dtype!r}: expected one of {', '.join(FORMATS)}")
    if q.kv not in KV_DTYPES:
        raise ProjectionError(f"--kv-dtype {q.kv!r}: expected one of {', '.join(KV_DTYPES)}")
    if q.group_size not in GROUP_SIZES:
        raise ProjectionError(
            f"--group-size {q.group_size}: expected one of {', '.join(map(str, GROUP_SIZES))}"
        )
    if q.weight_dtype == "int4-wo" and q.model.hidden % q.group_size:
        raise ProjectionError(f"--group-size {q.group_size} does not divide the hidden size {q.model.hidden}")
    if q.tp < 1:
        raise ProjectionError(f"--tp {q.tp}: must be at least 1")
    if q.mode not in LAUNCH_MODES:
        raise ProjectionError(f"--launch {q.mode!r}: expected one of {', '.join(LAUNCH_MODES)}")


def project(hw: HardwareProfile, q: Query, batches: list[int]) -> list[dict[str, Any]]:
    """One row per batch size (see the module docstring); rows past the KV capacity say so."""
    check_query(q)
    if any(b <= 0 for b in batches):
        raise ProjectionError(f"batch sizes must be positive, got {batches}")
    if q.input_len <= 0 or q.output_len <= 0:
        raise ProjectionError("--input-len and --output-len must be positive")
    cap = max_concurrency(hw, q)
    ttft = prefill_s(hw, q, 1)
    rows = []
    for b in batches:
        mid = q.input_len + (q.output_len - 1) / 2
        step = decode_step(hw, q, b, round(mid))
        out_tps = b / step.seconds
        total_time = prefill_s(hw, q, b) + q.output_len * step.seconds
        row = {
            "batch": b,
            "output_tokens_per_s": out_tps,
            "total_tokens_per_s": b * (q.input_len + q.output_len) / total_time,
            "serving_output_tokens_per_s": b * q.output_len / total_time,
            "step_seconds": step.seconds,
            "ttft_seconds": ttft,
            "weight_bytes_per_gpu": weights_bytes_per_gpu(q),
            "kv_bytes_per_request": kv_bytes_per_request_per_gpu(q) * q.tp,
            "max_concurrency": cap,
            "fits": b <= cap,
            "bound": step.bound,
            "weights_seconds": step.weights_s,
            "kv_seconds": step.kv_s,
            "compute_seconds": step.compute_s,
            "overhead_seconds": step.overhead_s,
            "communication_seconds": step.comm_s,
            "memory_seconds": step.memory_s,
            "cost_per_million_output_tokens": (
                cost_per_million_tokens(q.price_per_gpu_hour, q.tp, out_tps)
                if q.price_per_gpu_hour is not None
                else None
            ),
        }
        rows.append(row)
    return rows


def describe(hw: HardwareProfile) -> dict[str, Any]:
    d = asdict(hw)
    for key in ("measured_gemm", "gemm_fraction", "attention"):
        d.pop(key, None)
    d["allreduce_curve"] = (
        None if hw.allreduce_curve is None else f"{hw.allreduce_curve.op} x{hw.allreduce_curve.world_size}"
    )
    d["attention"] = sorted(hw.attention)
    return d
