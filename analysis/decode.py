"""LLM decode projection: tokens/s, TTFT, KV capacity and $ per million tokens, from what a step costs.

A decode step is a sequence of kernels, and its time is their sum. Per layer, on one of t tensor-parallel
ranks, at batch B and context S:

    GEMMs       qkv, o, gate_up, down at M = B in the weight format: the time the node measured for that
                shape and format (matmul probe, interpolated in M), else bytes / (bandwidth x the format's
                small-M fraction) or FLOPs / (peak x efficiency), whichever is longer
    attention   reads K and V: B x S x 2 x kv_heads/t x head_dim x KV bytes, at the attention bandwidth the
                node measured (decode probe), else bandwidth x the attention fraction
    small ops   norms, RoPE, cache writes, activation: the engine's small kernels per layer x the per-op cost
                of its launch mode (eager: launch and dispatch, measured inside real steps where a run has it;
                native: a C++ runtime's launches; graph: per kernel inside a CUDA graph)
    all-reduce  two per layer of B x hidden x 2 bytes: the measured curve, else latency + bytes x 2(t-1)/t / busbw
                (an engine's custom one-shot all-reduce sets the latency over NVLink / xGMI)
and once per step the LM head GEMM (weight-only, fp8 and int8 models keep it in bf16, as serving engines do),
the final norm and sampling (the engine's head kernels, B x vocab logits read). Every GEMM also pays at least
one op's cost (a launch that outlasts a tiny kernel). MoE: every touched expert's weights are read once; tokens
split across them. Then the engine's host time per step (analysis/engines.py: scheduler, input preparation,
sampler, detokeniser, Python), added, or only what exceeds the kernels where the engine overlaps it. The GEMM
kernel per weight format is the engine's (Marlin, AWQ, GGML, ExLlama; engines.toml), q/k/v and gate/up
separate where the engine launches them so. The step's split is reported: weights (memory-bound GEMMs),
KV/attention, compute (compute-bound GEMMs), overhead, communication, host.

    output tok/s  = B / step time
    serving total = B x (in + out) / (prefill time + out x step time at the mean context)   (vLLM's count)
    $ / M tokens  = price per GPU-hour x GPUs / output tok/s x 1e6 / 3600

Weight formats: fp32, bf16, fp16, fp8 (W8A8), int8 (W8A8), int8-wo and int4-wo (weight-only, bf16
activations; int4 carries a bf16 scale and zero per `group_size` weights). KV cache: fp32, bf16, fp16, fp8,
int8. Hardware profiles: `--run RUN.json` (measured: every part above that the run measured),
`--gpu KEY` (the sheet x the database's published microbenchmark fractions: analysis/data/gpus.toml
[decode]) or `--gpu KEY --ideal` (100 % of the sheet, no overheads: the bound no real system reaches).

    python -m analysis project --gpu h100-sxm5-80gb --model llama-3.1-8b --dtype int4-wo --engine vllm@0.5.3
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Any

from analysis.engines import Engine, gemm_kernels
from analysis.formats import (
    ELEMENT_BYTES,
    ProjectionError,
    Query,
    activation_dtype,
    check_query,
    head_format,
    weight_bytes,
)
from analysis.formulas import gemm_flops, interp_log_x
from analysis.hardware import HardwareProfile
from analysis.headline import compute_family
from analysis.models import Linear, ModelConfig, decode_linears, experts_touched, parameter_count

MEMORY_RESERVE = 0.10  # of device memory kept for activations, the CUDA context and fragmentation


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
    host_s: float = 0.0  # the engine's host time per step that the GPU waits for (scheduler, sampler, Python)
    a2a_s: float = 0.0  # expert parallelism: the MoE layers' dispatch and combine all-to-alls

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
            "all-to-all": self.a2a_s,
            "host": self.host_s,
        }
        return max(parts, key=lambda k: parts[k])


def gemm_seconds(
    hw: HardwareProfile,
    m: int,
    n: int,
    k: int,
    q: Query,
    fmt: str | None = None,
    kernel: str | None = None,
) -> tuple[float, bool]:
    """Time of one GEMM at M = m in `fmt` (the query's weight format), and whether its bytes term set it.

    `kernel`: an engine's own GEMM kernel class for the format (engines.toml [gemm_kernels]); None runs the
    dense library's kernel, which is what the node measured."""
    fmt = fmt or q.weight_dtype
    act = ELEMENT_BYTES[activation_dtype(fmt)]
    flops = gemm_flops(m, n, k)
    spec = gemm_kernels()[kernel] if kernel is not None else None
    per_weight = (
        weight_bytes(fmt, q.group_size, spec.group_bytes) if spec else weight_bytes(fmt, q.group_size)
    )
    nbytes = m * k * act + n * k * per_weight + m * n * act
    mem_s = nbytes / hw.bandwidth_bytes_per_s
    comp_s = flops / hw.compute(compute_family(fmt))
    if spec is not None:
        fraction = interp_log_x(spec.fraction, m)
        return hw.gemm_latency_s + max(mem_s, comp_s) / fraction, mem_s >= comp_s
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


def engine_linears(cfg: ModelConfig, tp: int, engine: Engine) -> list[Linear]:
    """The GEMMs of a step as the engine launches them: fused QKV and gate/up, or split (llama.cpp, HF)."""
    out = []
    heads, kv = cfg.heads // tp, max(1, cfg.kv_heads // tp)
    for lin in decode_linears(cfg, tp):
        if lin.op == "qkv" and engine.split_qkv:
            hd = cfg.head_dim
            out += [replace(lin, op="q", n=heads * hd), replace(lin, op="k", n=kv * hd)]
            out.append(replace(lin, op="v", n=kv * hd))
        elif lin.op == "gate_up" and engine.split_gate_up:
            out += [replace(lin, op="gate", n=lin.n // 2), replace(lin, op="up", n=lin.n // 2)]
        else:
            out.append(lin)
    return out


def decode_step(hw: HardwareProfile, q: Query, batch: int, context: int) -> Step:
    cfg, t, e = q.model, q.tp, q.run_engine
    op_s = hw.op_s(e.launch, batch, e.op_seconds)
    ops_layer = q.ops_per_layer if q.ops_per_layer is not None else e.small_ops_per_layer
    ops_head = q.ops_head if q.ops_head is not None else e.small_ops_head
    if e.fp8_activation_quant and q.weight_dtype == "fp8":
        ops_layer += 4  # a per-token quantisation kernel before each of the layer's fp8 GEMMs
    # A GPU runs kernels while the host issues the next ones: launched one by one (eager, native), the step
    # takes the longer of the kernels' time and the host's launches; a small kernel itself takes what it takes
    # inside a graph. Replayed from a graph, or on a CPU (the host is the device), every op costs its op_s.
    overlapped = hw.asynchronous and e.launch != "graph"
    small_s = hw.op_s("graph", batch) if overlapped else op_s
    floor_s = 0.0 if overlapped else op_s  # a kernel shorter than its launch waits for the launch
    weights_s = comp_s = overhead_s = weight_total = 0.0
    launched = 0
    for lin in engine_linears(cfg, t, e):
        fmt = head_format(q.weight_dtype) if lin.op == "lm_head" else q.weight_dtype
        if lin.op in ("gate_up", "gate", "up", "down") and cfg.experts > 1:
            # every touched expert's weights are read once; each token runs k experts' FLOPs
            count = experts_touched(cfg, batch) * cfg.layers
            m = max(1, round(batch * cfg.experts_per_token / experts_touched(cfg, batch)))
        else:
            count, m = lin.per_step, batch
        s, is_mem = gemm_seconds(hw, m, lin.n, lin.k, q, fmt, e.kernel(fmt))
        overhead_s += count * (max(s, floor_s) - s)
        weight_total += count * lin.n * lin.k * weight_bytes(fmt, q.group_size)
        launched += count
        if is_mem:
            weights_s += count * s
        else:
            comp_s += count * s
    kv_heads = max(1, cfg.kv_heads // t)
    kv_layer = batch * context * 2 * kv_heads * cfg.head_dim * ELEMENT_BYTES[q.kv]
    attn_flops = 4 * batch * context * (cfg.heads // t) * cfg.head_dim
    kv_s = cfg.layers * max(hw.attention_s(q.kv, kv_layer, attn_flops, context), floor_s, small_s)
    logits = batch * cfg.vocab / t * 4.0  # fp32 logits written, then read by sampling
    small = cfg.layers * ops_layer + ops_head
    overhead_s += small * small_s + logits / hw.bandwidth_bytes_per_s
    comm_s, a2a_s = (
        moe_communication(hw, q, batch)
        if q.expert_parallel and cfg.experts > 1
        else (
            2 * cfg.layers * hw.allreduce_s(batch * cfg.hidden * 2.0, t, e.custom_allreduce_s),
            0.0,
        )
    )
    launched += cfg.layers + small + (2 * cfg.layers if t > 1 else 0)
    kernels_s = weights_s + kv_s + comp_s + overhead_s + comm_s + a2a_s
    if overlapped and launched * op_s > kernels_s:  # launch-bound: the GPU waits for the host's launches
        overhead_s += launched * op_s - kernels_s
        kernels_s = launched * op_s
    host = 0.0 if hw.ideal else e.host_seconds(batch, t)
    host_s = max(0.0, host - kernels_s) if e.overlap else host
    return Step(
        kernels_s + host_s,
        weights_s,
        kv_s,
        comp_s,
        overhead_s,
        comm_s,
        weight_total,
        kv_layer * cfg.layers,
        host_s,
        a2a_s,
    )


def moe_communication(hw: HardwareProfile, q: Query, batch: int) -> tuple[float, float]:
    """(all-reduce seconds, all-to-all seconds) of one step of an MoE model under expert parallelism (EP = TP):
    attention stays tensor-parallel (one all-reduce per layer); each MoE layer sends every token's hidden state
    to the GPUs of its k experts and back: two all-to-alls, each rank's buffer its 1/TP share of the batch's
    tokens x k x hidden x 2 bytes (DESIGN.md: two all-to-alls per MoE layer)."""
    cfg, t = q.model, q.tp
    allreduce = cfg.layers * hw.allreduce_s(batch * cfg.hidden * 2.0, t, q.run_engine.custom_allreduce_s)
    per_rank = math.ceil(batch / t) * cfg.experts_per_token * cfg.hidden * 2.0
    return allreduce, 2 * cfg.layers * hw.alltoall_s(per_rank, t)


def prefill_s(hw: HardwareProfile, q: Query, batch: int) -> float:
    """Prefill of `batch` prompts of input_len tokens: each GEMM at M = batch x input_len, causal attention."""
    cfg, t, n_tok, e = q.model, q.tp, batch * q.input_len, q.run_engine
    total = 0.0
    for lin in engine_linears(cfg, t, e):
        if lin.op in ("gate_up", "gate", "up", "down") and cfg.experts > 1:
            # as in a decode step: every touched expert's weights read once, the tokens split among them
            # (128 prompt tokens x 2 of 8 experts: all 8 touched, M = 32 each, memory-bound)
            touched = experts_touched(cfg, n_tok)
            per, m = touched * cfg.layers, max(1, round(n_tok * cfg.experts_per_token / touched))
        else:
            # only the last position of each prompt needs logits
            per, m = lin.per_step, n_tok if lin.op != "lm_head" else batch
        fmt = head_format(q.weight_dtype) if lin.op == "lm_head" else q.weight_dtype
        total += per * gemm_seconds(hw, m, lin.n, lin.k, q, fmt, e.kernel(fmt))[0]
    total += batch * 2 * q.input_len**2 * (cfg.heads // t) * cfg.head_dim * cfg.layers / hw.compute("bf16")
    # the norms, RoPE, activations and kernel boundaries of a prompt-sized step (gpus.toml prefill_factor)
    total *= hw.prefill_factor
    total += 2 * cfg.layers * hw.allreduce_s(n_tok * cfg.hidden * 2.0, t, e.custom_allreduce_s)
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
            "all_to_all_seconds": step.a2a_s,
            "host_seconds": step.host_s,
            "memory_seconds": step.memory_s,
            "engine": q.run_engine.label,
            "cost_per_million_output_tokens": (
                cost_per_million_tokens(q.price_per_gpu_hour, q.tp, out_tps)
                if q.price_per_gpu_hour is not None
                else None
            ),
        }
        rows.append(row)
    return rows
