"""A Llama-style decoder as plain tensors: what probes.decode times, in any weight format.

From a Hugging Face config.json: RMSNorm, fused QKV and O projections, RoPE, attention over a preallocated KV
cache through scaled_dot_product_attention (GQA read once per KV head), RMSNorm, fused gate/up, SiLU, down,
a final norm and the LM head. Random weights in a weight format: fp32, bf16, fp16, or weight-only int8 / int4
(probes.quant) with bf16 activations; the embedding and the LM head stay in the activation dtype, as serving
engines keep them. `count_ops` counts the aten ops of a layer and of the head (each a kernel launch on a
GPU), GEMMs and attention apart.

The probe and the tests share this one network; tests/test_decode_probe.py checks it against a float64
reference written out head by head.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from analysis.formats import activation_dtype
from analysis.models import ModelConfig
from probes import quant
from probes.timing import Split

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def torch_activation(fmt: str) -> torch.dtype:
    """The activation (and KV cache) dtype of a weight format, as torch names it."""
    return TORCH_DTYPES[activation_dtype(fmt)]


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
    """Random weights in weight format `fmt`, caches filled with random K and V."""
    torch.manual_seed(seed)
    dtype = torch_activation(fmt)

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


def sdpa_backend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> str:
    """The kernel `attention` gets from scaled_dot_product_attention here: flash, efficient, cudnn or the math
    fallback (ROCm builds without AOTriton flash, fp32 KV on some GPUs, a head dim a fused kernel lacks).
    The math path materialises the scores and repeats the KV heads: slower than what an engine runs."""
    choose = getattr(torch, "_fused_sdp_choice", None)  # the dispatcher's own choice; private, so guarded
    if choose is None:
        return "unknown"
    try:
        from torch.nn.attention import SDPBackend

        return SDPBackend(choose(q, keys, values, enable_gqa=keys.shape[1] != q.shape[1])).name.lower()
    except Exception:  # an older or newer signature: say so rather than guess
        return "unknown"


@torch.inference_mode()
def step(
    model: Decoder,
    tokens: torch.Tensor,
    pos: int,
    with_layers: bool = True,
    with_head: bool = True,
    parts: Split | None = None,
) -> torch.Tensor:
    """One decode step at position `pos` for B tokens: B x vocab logits. Writes K, V at `pos` in each layer.

    Without the head it returns the hidden state after the layers (the part the probe scales by layers).
    `parts` counts the host time spent in the GEMMs and attention, so the rest of the step can be told apart."""
    lin, att = (parts.wrap(linear), parts.wrap(attention)) if parts is not None else (linear, attention)
    cfg = model.cfg
    b = tokens.shape[0]
    nq, nkv, hd = cfg.heads, cfg.kv_heads, cfg.head_dim
    x = model.embed[tokens]  # [B, hidden]
    cos, sin = model.rope_cos[pos], model.rope_sin[pos]
    for i, layer in enumerate(model.layers if with_layers else []):
        qkv = lin(rms_norm(x, layer["attn_norm"]), layer["qkv"])
        q = qkv[:, : nq * hd].view(b, nq, 1, hd)
        k = qkv[:, nq * hd : (nq + nkv) * hd].view(b, nkv, 1, hd)
        v = qkv[:, (nq + nkv) * hd :].view(b, nkv, 1, hd)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        model.k_cache[i][:, :, pos : pos + 1] = k
        model.v_cache[i][:, :, pos : pos + 1] = v
        attn = att(q, model.k_cache[i][:, :, : pos + 1], model.v_cache[i][:, :, : pos + 1])
        x = x + lin(attn.reshape(b, nq * hd), layer["o"])
        gate, up = lin(rms_norm(x, layer["mlp_norm"]), layer["gate_up"]).chunk(2, dim=-1)
        x = x + lin(F.silu(gate) * up, layer["down"])
    if not with_head:
        return x
    return lin(rms_norm(x, model.final_norm), model.lm_head)


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
