"""Real decode steps of a model-shaped network, and what one step is made of: the measurement the decode
projection is judged against, and the parts it is built from.

From a Hugging Face config.json the probe builds a Llama-style decoder with the real layer shapes and random
weights in a weight format (fp32, bf16, fp16, or weight-only int8 / int4 with bf16 activations, probes.quant;
the embedding and the LM head stay in the activation dtype, as serving engines keep them): RMSNorm, fused
QKV and O projections, RoPE, attention over a preallocated KV cache (filled with random keys and values up to
the context length) through scaled_dot_product_attention, RMSNorm, fused gate/up, SiLU, down, a final norm
and the LM head. One decode step embeds B tokens, runs every layer (writing each layer's new K and V at
position S and attending over S + 1 positions) and computes B x vocab logits; output tokens/s = B / step.

Beside each step the probe measures the parts the projection (analysis.decode) sums:
- per-op overhead: a tiny op back to back (eager dispatch and launch; on CUDA also per kernel inside a CUDA
  graph): the `op_overhead_eager_torch` / `op_overhead_graph_torch` headlines, seconds per op;
- the ops of a layer and of the head, counted at the aten level while one step runs (GEMMs and attention
  apart: their time is measured on their own);
- attention: scaled_dot_product_attention over the cache of one layer at each batch, the achieved bandwidth
  of reading K and V (the KV dtype is the activation dtype).
The GEMMs themselves come from the matmul probe's decode sweep of the same shapes and format.

The layers and the head (embedding, final norm, LM head) are timed apart, the cache flushed before every
repetition; step = t(layers) x L / layers run + t(head). When the whole model would not fit, or would take
too long here, the probe runs `max_layers` layers (or as many as fit in memory) and says it scaled.

    python -m probes.decode --device cpu
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from analysis.headline import Headline
from analysis.models import ModelConfig, load_model
from analysis.rundoc import Measurement
from probes import quant
from probes.context import Context, measure_case, skipped
from probes.device import free_memory_bytes

NAME = "decode"
NOTE = (
    "decode: measured tokens/s = batch / step time of a model-shaped decoder with random weights, with its "
    "parts (per-op overhead, ops per layer, attention bandwidth); the projection from the run's parts beside it"
)
# the activation (and KV cache) dtype of each weight format
ACTIVATION = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "int8-wo": quant.ACTIVATION_DTYPE,
    "int4-wo": quant.ACTIVATION_DTYPE,
}
GEMM_OPS = frozenset(
    {
        "mm",
        "addmm",
        "bmm",
        "matmul",
        "_weight_int8pack_mm",
        "_weight_int4pack_mm",
        "_weight_int4pack_mm_for_cpu",
    }
)
GRAPH_OPS = 64  # tiny kernels per CUDA graph replay when timing the in-graph overhead

Weight = torch.Tensor | quant.QuantWeight


def linear(x: torch.Tensor, w: Weight) -> torch.Tensor:
    """x[M, K] @ W^T for a dense W[N, K] or a weight-only quantized one."""
    return w.matmul(x) if isinstance(w, quant.QuantWeight) else x @ w.t()


@dataclass
class Decoder:
    """The weights and caches of a model-shaped decoder (no autograd, no modules: plain tensors)."""

    cfg: ModelConfig
    layers: list[dict[str, Weight]]
    embed: torch.Tensor  # [vocab, hidden]
    lm_head: torch.Tensor  # [vocab, hidden]; the embedding itself when tied
    final_norm: torch.Tensor
    k_cache: list[torch.Tensor]  # per layer [B, kv_heads, S_max, head_dim]
    v_cache: list[torch.Tensor]
    rope_cos: torch.Tensor  # [S_max, head_dim / 2]
    rope_sin: torch.Tensor

    def parameter_count(self) -> int:
        def count(t: Weight) -> int:
            return t.n * t.k if isinstance(t, quant.QuantWeight) else t.numel()

        tensors = [self.embed, self.final_norm, *(t for layer in self.layers for t in layer.values())]
        if self.lm_head.data_ptr() != self.embed.data_ptr():
            tensors.append(self.lm_head)
        return sum(count(t) for t in tensors)

    def kv_bytes_per_token(self) -> int:
        per = sum(c[0, :, 0].numel() * c.element_size() for c in (*self.k_cache, *self.v_cache))
        return per

    def batch(self, b: int) -> Decoder:
        """The same weights with the caches of the first b sequences."""
        return Decoder(
            self.cfg,
            self.layers,
            self.embed,
            self.lm_head,
            self.final_norm,
            [c[:b] for c in self.k_cache],
            [c[:b] for c in self.v_cache],
            self.rope_cos,
            self.rope_sin,
        )


def build(
    cfg: ModelConfig,
    n_layers: int,
    batch: int,
    max_seq: int,
    fmt: str,
    device: torch.device,
    seed: int = 0,
    group_size: int = 128,
    keep_codes: bool = False,
) -> Decoder:
    """Random weights in weight format `fmt` (see ACTIVATION), caches filled with random K and V."""
    torch.manual_seed(seed)
    dtype = ACTIVATION[fmt]

    def w(*shape: int, scale: float | None = None) -> torch.Tensor:
        # uniform with the variance of N(0, s^2): filled in place on the device, in the target dtype
        s = (scale if scale is not None else 1 / math.sqrt(shape[-1])) * math.sqrt(3)
        return torch.empty(*shape, dtype=dtype, device=device).uniform_(-s, s)

    def linear_weight(n: int, k: int) -> Weight:
        if fmt in quant.WEIGHT_ONLY:
            return quant.random_weight(fmt, n, k, device, group_size, keep_codes, scale=1 / math.sqrt(k))
        return w(n, k)

    h, hd, nq, nkv = cfg.hidden, cfg.head_dim, cfg.heads, cfg.kv_heads
    layers = [
        {
            "attn_norm": torch.ones(h, dtype=dtype, device=device),
            "qkv": linear_weight((nq + 2 * nkv) * hd, h),
            "o": linear_weight(h, nq * hd),
            "mlp_norm": torch.ones(h, dtype=dtype, device=device),
            "gate_up": linear_weight(2 * cfg.intermediate, h),
            "down": linear_weight(h, cfg.intermediate),
        }
        for _ in range(n_layers)
    ]
    embed = w(cfg.vocab, h, scale=1.0)
    lm_head = embed if cfg.tied_embeddings else w(cfg.vocab, h)
    cache_shape = (batch, nkv, max_seq, hd)
    k_cache = [torch.empty(*cache_shape, dtype=dtype, device=device).uniform_(-1, 1) for _ in range(n_layers)]
    v_cache = [torch.empty(*cache_shape, dtype=dtype, device=device).uniform_(-1, 1) for _ in range(n_layers)]
    inv = 1.0 / (10000 ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = torch.arange(max_seq, dtype=torch.float64)[:, None] * inv[None, :]
    return Decoder(
        cfg,
        layers,
        embed,
        lm_head,
        torch.ones(h, dtype=dtype, device=device),
        k_cache,
        v_cache,
        ang.cos().to(dtype=dtype, device=device),
        ang.sin().to(dtype=dtype, device=device),
    )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of the head dimension: the Llama / Hugging Face convention."""
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """One query per sequence: no causal mask; GQA reads each KV head once, as serving kernels do."""
    return F.scaled_dot_product_attention(q, keys, values, enable_gqa=keys.shape[1] != q.shape[1])


@torch.inference_mode()
def step(
    model: Decoder, tokens: torch.Tensor, pos: int, with_layers: bool = True, with_head: bool = True
) -> torch.Tensor:
    """One decode step at position `pos` for B tokens: B x vocab logits. Writes K, V at `pos` in each layer.

    Without the head it returns the hidden state after the layers (the part the probe scales by layers)."""
    cfg = model.cfg
    b = tokens.shape[0]
    nq, nkv, hd = cfg.heads, cfg.kv_heads, cfg.head_dim
    x = model.embed[tokens]  # [B, hidden]
    cos, sin = model.rope_cos[pos], model.rope_sin[pos]
    for i, layer in enumerate(model.layers if with_layers else []):
        qkv = linear(rms_norm(x, layer["attn_norm"]), layer["qkv"])
        q = qkv[:, : nq * hd].view(b, nq, 1, hd)
        k = qkv[:, nq * hd : (nq + nkv) * hd].view(b, nkv, 1, hd)
        v = qkv[:, (nq + nkv) * hd :].view(b, nkv, 1, hd)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        model.k_cache[i][:, :, pos : pos + 1] = k
        model.v_cache[i][:, :, pos : pos + 1] = v
        attn = attention(q, model.k_cache[i][:, :, : pos + 1], model.v_cache[i][:, :, : pos + 1])
        x = x + linear(attn.reshape(b, nq * hd), layer["o"])
        gate, up = linear(rms_norm(x, layer["mlp_norm"]), layer["gate_up"]).chunk(2, dim=-1)
        x = x + linear(F.silu(gate) * up, layer["down"])
    if not with_head:
        return x
    return rms_norm(x, model.final_norm) @ model.lm_head.t()


class _OpCounter(TorchDispatchMode):
    """Counts the aten ops a piece of code dispatches (each a kernel launch on a GPU, a dispatch on a CPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count_ops(model: Decoder, tokens: torch.Tensor, pos: int) -> dict[str, int]:
    """Ops per layer and in the head, split into GEMMs, attention and the small rest (norms, RoPE, ...)."""

    def kinds(with_layers: bool) -> Counter[str]:
        with _OpCounter() as c:
            step(model, tokens, pos, with_layers)
        out: Counter[str] = Counter()
        for name, n in c.ops.items():
            kind = "gemm" if name in GEMM_OPS else "attention" if "scaled_dot_product" in name else "small"
            out[kind] += n
        return out

    head, full = kinds(False), kinds(True)
    layers = len(model.layers)
    return {
        "ops_per_layer": round((full["small"] - head["small"]) / layers),
        "gemms_per_layer": round((full["gemm"] - head["gemm"]) / layers),
        "ops_head": head["small"],
    }


def n_cases(ctx: Context) -> int:
    dc = ctx.cfg.decode
    return (2 if ctx.devices[0].type == "cuda" else 1) + len(dc.dtypes) * len(dc.batches) * 3


def bytes_needed(cfg: ModelConfig, fmt: str, n_layers: int, batch: int, context: int) -> float:
    """Device memory of the decoder: layers in `fmt`, embedding and head in the activation dtype, caches."""
    act = torch.empty((), dtype=ACTIVATION[fmt]).element_size()
    per_weight = quant.bytes_per_weight(fmt) if fmt in quant.WEIGHT_ONLY else act
    layer = (cfg.heads + 2 * cfg.kv_heads) * cfg.head_dim * cfg.hidden + cfg.heads * cfg.head_dim * cfg.hidden
    layer += 3 * cfg.hidden * cfg.intermediate
    head = cfg.vocab * cfg.hidden * (1 if cfg.tied_embeddings else 2)
    kv = 2 * batch * cfg.kv_heads * (context + 1) * cfg.head_dim * act
    # the largest weight's int8 codes and int32 copy exist while it is packed
    packing = 5 * 2 * cfg.intermediate * cfg.hidden if fmt in quant.WEIGHT_ONLY else 0
    return n_layers * (layer * per_weight + kv) + head * act + packing


def run(ctx: Context) -> list[Measurement]:
    dc = ctx.cfg.decode
    device = ctx.devices[0]
    out = measure_overhead(ctx, device)
    for fmt in dc.dtypes:
        out.extend(run_format(ctx, device, fmt))
    return out


def measure_overhead(ctx: Context, device: torch.device) -> list[Measurement]:
    """Seconds per tiny op back to back, eager (and per kernel inside a CUDA graph on CUDA devices)."""
    x = torch.zeros(1, device=device)
    out = []
    m = measure_case(
        ctx,
        probe=NAME,
        case="overhead/eager",
        device=device,
        params={"kind": "overhead", "mode": "eager", "op": "add_ on one element"},
        fn=lambda: x.add_(1.0),
        check=None,
        headline=str(Headline.op_overhead("eager")),
    )
    out.append(m)
    if device.type == "cuda":
        out.append(_graph_overhead(ctx, device, x))
    return out


def _graph_overhead(ctx: Context, device: torch.device, x: torch.Tensor) -> Measurement:
    params: dict[str, Any] = {
        "kind": "overhead",
        "mode": "graph",
        "op": "add_ on one element",
        "ops": GRAPH_OPS,
    }
    try:
        with torch.cuda.device(device):
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):  # warm up outside the capture, as the CUDA graph docs ask
                x.add_(1.0)
            torch.cuda.current_stream(device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(GRAPH_OPS):
                    x.add_(1.0)
    except Exception as exc:  # a build or driver without graph capture: recorded, never a number
        return skipped(NAME, "overhead/graph", device, params, f"CUDA graph capture failed: {exc}", "error")
    m = measure_case(
        ctx,
        probe=NAME,
        case="overhead/graph",
        device=device,
        params=params,
        fn=graph.replay,
        check=None,
        headline=str(Headline.op_overhead("graph")),
    )
    if m.status == "ok" and m.value is not None:
        m.value = m.value / GRAPH_OPS  # seconds per kernel
    return m


def run_format(ctx: Context, device: torch.device, fmt: str) -> list[Measurement]:
    dc = ctx.cfg.decode
    model_cfg = load_model(dc.model)
    group_size = ctx.cfg.matmul.group_size
    max_b = max(dc.batches)
    base: dict[str, Any] = {
        "model": dc.model,
        "dtype": fmt,
        "kv_dtype": str(ACTIVATION[fmt]).removeprefix("torch."),
        "context": dc.context,
        "layers": model_cfg.layers,
    }
    if fmt == "int4-wo":
        base["group_size"] = group_size
    limit = min(model_cfg.layers, dc.max_layers) if dc.max_layers else model_cfg.layers
    budget = 0.8 * free_memory_bytes(device)
    n_layers = limit
    while n_layers > 1 and bytes_needed(model_cfg, fmt, n_layers, max_b, dc.context) > budget:
        n_layers -= 1
    need = bytes_needed(model_cfg, fmt, n_layers, max_b, dc.context)
    why = None if fmt in ACTIVATION else f"unknown weight format {fmt!r}"
    if why is None and fmt in quant.WEIGHT_ONLY:
        op = "_weight_int8pack_mm" if fmt == "int8-wo" else "_weight_int4pack_mm"
        why = None if hasattr(torch, op) else f"this torch build has no torch.{op}"
        shapes = [(model_cfg.intermediate * 2, model_cfg.hidden), (model_cfg.hidden, model_cfg.intermediate)]
        platform = "cpu" if device.type == "cpu" else "cuda"
        why = why or next(
            (r for n, k in shapes if (r := quant.shape_reason(fmt, n, k, group_size, platform))), None
        )
    if why is None and need > budget:
        why = f"needs {need / 1e9:.1f} GB with one layer, over 0.8 of the free memory"
    base["layers_run"] = n_layers
    if why is not None:
        return [
            skipped(NAME, f"{dc.model}/{fmt}/B={b}", device, {**base, "batch": b}, why) for b in dc.batches
        ]
    try:
        model = build(model_cfg, n_layers, max_b, dc.context + 1, fmt, device, group_size=group_size)
        probe_tokens = torch.randint(0, model_cfg.vocab, (1,), device=device)
        counts = count_ops(model.batch(1), probe_tokens, dc.context)
    except Exception as exc:  # e.g. a kernel this device lacks: recorded for every batch
        return [
            skipped(
                NAME,
                f"{dc.model}/{fmt}/B={b}",
                device,
                {**base, "batch": b},
                str(exc).splitlines()[0],
                "error",
            )
            for b in dc.batches
        ]
    base.update(counts)
    out = []
    for b in sorted(dc.batches):
        sub = model.batch(b)
        tokens = torch.randint(0, model_cfg.vocab, (b,), device=device)
        params = {**base, "batch": b}
        out.append(_attention_case(ctx, device, sub, dc.context, params))
        # Layers and head are timed apart, each with the cache flushed before every repetition (in a real
        # step the other layers' weights and the head evict them): step = layers x L / run + head. Timing the
        # layers directly, not as (layers + head) - head, keeps the head's noise out of the scaled part.
        head = measure_case(
            ctx,
            probe=NAME,
            case=f"{dc.model}/{fmt}/head/B={b}",
            device=device,
            params={**params, "kind": "head"},
            fn=lambda sub=sub, tokens=tokens: step(sub, tokens, dc.context, with_layers=False),
            check=None,
            flush_cache=True,
        )
        out.append(head)
        m = measure_case(
            ctx,
            probe=NAME,
            case=f"{dc.model}/{fmt}/B={b}",
            device=device,
            params={**params, "kind": "step"},
            fn=lambda sub=sub, tokens=tokens: step(sub, tokens, dc.context, with_head=False),
            check=_finite_check(sub, tokens, dc.context),
            flush_cache=True,
        )
        if m.status == "ok" and head.status == "ok":
            t_layers, t_head = m.timing["stats"]["median_s"], head.timing["stats"]["median_s"]
            t_step = t_layers * model_cfg.layers / n_layers + t_head
            m.params.update(
                step_seconds=t_step,
                head_seconds=t_head,
                layers_seconds=t_layers,
                scaled=n_layers != model_cfg.layers,
            )
            m.value, m.unit = b / t_step, "tokens_per_s"
            if n_layers != model_cfg.layers:
                m.params["note"] = f"ran {n_layers} of {model_cfg.layers} layers and scaled by layer count"
        out.append(m)
    return out


def _attention_case(
    ctx: Context, device: torch.device, model: Decoder, context: int, params: dict[str, Any]
) -> Measurement:
    """scaled_dot_product_attention of one layer over S + 1 cached positions: KV bytes / time."""
    cfg = model.cfg
    b = model.k_cache[0].shape[0]
    q = torch.empty(b, cfg.heads, 1, cfg.head_dim, dtype=model.k_cache[0].dtype, device=device).uniform_(
        -1, 1
    )
    keys, values = model.k_cache[0][:, :, : context + 1], model.v_cache[0][:, :, : context + 1]
    kv_bytes = 2 * keys.numel() * keys.element_size()
    result: dict[str, torch.Tensor] = {}

    def run() -> None:
        result["out"] = attention(q, keys, values)

    def check() -> str | None:
        if "out" not in result:
            return "no output"
        got = result["out"].double()
        rep = cfg.heads // cfg.kv_heads
        k64 = keys.double().repeat_interleave(rep, 1)
        v64 = values.double().repeat_interleave(rep, 1)
        w = torch.softmax(q.double() @ k64.transpose(-1, -2) / math.sqrt(cfg.head_dim), -1)
        err = (got - w @ v64).abs().max().item()
        tol = 1e-4 if keys.dtype == torch.float32 else 2e-2
        return None if err <= tol else f"attention differs from the float64 reference by {err:.3g}"

    return measure_case(
        ctx,
        probe=NAME,
        case=f"{params['model']}/{params['dtype']}/attention/B={b}",
        device=device,
        params={**params, "kind": "attention"},
        fn=run,
        check=check,
        poison=result.clear,
        bytes_moved=kv_bytes,
        flush_cache=True,
    )


def _finite_check(model: Decoder, tokens: torch.Tensor, pos: int):
    def check() -> str | None:
        logits = step(model, tokens, pos)
        return None if torch.isfinite(logits).all() else "non-finite logits"

    return check


if __name__ == "__main__":  # python -m probes.NAME: the whole run, this probe only
    from probes.all import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
