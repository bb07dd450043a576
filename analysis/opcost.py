"""FLOPs and bytes of one aten op from its recorded input shapes and dtypes: the one table of formulas the traced
step (probes/trace.py) places on the roofline with.

    op_cost("aten::linear", [[64, 1024], [4096, 1024], [4096]], ["float", "float", "float"])
    -> OpCost(flops=2*64*4096*1024, bytes=4*(64*1024 + 4096*1024 + 4096 + 64*4096), kind="gemm")

GEMMs (mm, addmm, bmm, baddbmm, linear, matmul, _scaled_mm, _int_mm, the weight-only int8 / int4 kernels): 2MNK
FLOPs (a bias add not counted, the GEMM convention), the operands and the output once. Attention (scaled_dot_product_attention and its
flash / efficient / cudnn / math kernels): 4 B H Lq Lk D FLOPs (half when causal), Q, K, V and O once.
Convolutions: 2 x output elements x C/groups x kernel size, with the output size from stride, padding and
dilation. Elementwise ops: one FLOP per output element, inputs and output once; reductions and
normalisations: their input once and a few FLOPs per element (softmax 5, layer / RMS norm 8); copies and
casts: read and write; embedding: the rows gathered. Views move nothing. Every other op returns None: it is
listed as "no formula", never guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# bytes per element of the dtype names torch's profiler records (c10 ScalarType names)
DTYPE_BYTES = {
    "double": 8, "float": 4, "c10::Half": 2, "c10::BFloat16": 2, "c10::Float8_e4m3fn": 1,
    "c10::Float8_e5m2": 1, "c10::Float8_e4m3fnuz": 1, "c10::Float8_e5m2fnuz": 1, "c10::Float8_e8m0fnu": 1,
    "c10::Float4_e2m1fn_x2": 1, "long int": 8, "int": 4, "short int": 2, "signed char": 1,
    "unsigned char": 1, "bool": 1, "c10::complex<float>": 8,
}  # fmt: skip


def _aten(words: str) -> frozenset[str]:
    return frozenset("aten::" + n for n in words.split())


VIEWS = _aten(
    "t transpose view reshape _reshape_alias expand as_strided slice select unsqueeze squeeze permute "
    "detach alias unflatten flatten narrow split chunk unbind contiguous lift_fresh view_as resolve_conj "
    "resolve_neg _unsafe_view numpy_T"
)
ELEMENTWISE = _aten(
    "add add_ sub sub_ mul mul_ div div_ neg exp log sqrt rsqrt pow relu relu_ gelu gelu_ silu silu_ "
    "sigmoid tanh where clamp clamp_ abs maximum minimum erf sin cos reciprocal masked_fill masked_fill_ "
    "dropout native_dropout lt gt le ge eq ne logical_not bitwise_and"
)
REDUCTIONS = {  # FLOPs per input element
    "aten::sum": 1, "aten::mean": 1, "aten::amax": 1, "aten::max": 1, "aten::min": 1, "aten::argmax": 1,
    "aten::softmax": 5, "aten::_softmax": 5, "aten::log_softmax": 5, "aten::_log_softmax": 5,
    "aten::layer_norm": 8, "aten::native_layer_norm": 8, "aten::rms_norm": 8, "aten::_fused_rms_norm": 8,
    "aten::group_norm": 8, "aten::native_group_norm": 8, "aten::topk": 1, "aten::sort": 1, "aten::cumsum": 1,
}  # fmt: skip
COPIES = _aten("copy_ to _to_copy clone fill_ zero_ zeros_like ones_like empty_like index_copy_ cat stack")
ATTENTION = _aten(
    "scaled_dot_product_attention _scaled_dot_product_flash_attention _scaled_dot_product_efficient_attention "
    "_scaled_dot_product_cudnn_attention _scaled_dot_product_attention_math "
    "_scaled_dot_product_flash_attention_for_cpu _flash_attention_forward _efficient_attention_forward"
)


@dataclass(frozen=True)
class OpCost:
    flops: float
    bytes: float
    kind: str  # gemm, attention, conv, elementwise, reduction, copy, embedding, view


def _numel(shape: Any) -> int:
    return math.prod(shape) if isinstance(shape, (list, tuple)) and shape else (1 if shape == [] else 0)


def _size(dtype: Any) -> int:
    return DTYPE_BYTES.get(str(dtype), 4)


def _tensors(shapes: list[Any], dtypes: list[Any]) -> list[tuple[list[int], int]]:
    """(shape, element bytes) of each tensor input (a non-empty list shape with a known dtype)."""
    out = []
    for i, s in enumerate(shapes):
        if isinstance(s, (list, tuple)) and s and all(isinstance(x, int) for x in s):
            out.append((list(s), _size(dtypes[i] if i < len(dtypes) else None)))
    return out


def _gemm(
    m: int, n: int, k: int, batch: int, parts: list[tuple[list[int], int]], out_bytes: int, bias: bool
) -> OpCost:
    flops = 2.0 * batch * m * n * k  # the GEMM convention (a bias add's M x N is not counted)
    return OpCost(flops, sum(_numel(s) * e for s, e in parts) + batch * m * n * out_bytes, "gemm")


def op_cost(
    name: str, shapes: list[Any], dtypes: list[Any], concrete: list[Any] | None = None
) -> OpCost | None:
    """FLOPs and bytes of one call of `name` with these inputs; None where the table has no formula."""
    t = _tensors(shapes, dtypes)
    concrete = concrete or []
    if name in VIEWS:
        return OpCost(0.0, 0.0, "view")
    try:
        return _cost(name, shapes, dtypes, t, concrete)
    except (IndexError, ValueError, TypeError, ZeroDivisionError):
        return None  # shapes the formula does not expect: no figure rather than a wrong one


def _cost(
    name: str, shapes: list[Any], dtypes: list[Any], t: list[tuple[list[int], int]], concrete: list[Any]
) -> OpCost | None:
    if name in ("aten::mm", "aten::_int_mm", "aten::_scaled_mm"):
        (a, ea), (b, eb) = t[0], t[1]
        out = 4 if name == "aten::_int_mm" else (2 if name == "aten::_scaled_mm" else ea)
        return _gemm(a[0], b[1], a[1], 1, [(a, ea), (b, eb)], out, False)
    if name == "aten::addmm":
        (bias, e0), (a, ea), (b, eb) = t[0], t[1], t[2]
        return _gemm(a[0], b[1], a[1], 1, [(bias, e0), (a, ea), (b, eb)], ea, True)
    if name in ("aten::bmm", "aten::baddbmm"):
        (a, ea), (b, eb) = (t[1], t[2]) if name == "aten::baddbmm" else (t[0], t[1])
        return _gemm(a[1], b[2], a[2], a[0], [(a, ea), (b, eb)], ea, name == "aten::baddbmm")
    if name == "aten::linear":
        (x, ex), (w, ew) = t[0], t[1]
        m = _numel(x[:-1])
        return _gemm(m, w[0], x[-1], 1, t[:3], ex, len(t) > 2)
    if name == "aten::matmul":
        (a, ea), (b, eb) = t[0], t[1]
        if len(b) == 2:  # [..., M, K] x [K, N]
            return _gemm(_numel(a[:-1]), b[1], a[-1], 1, [(a, ea), (b, eb)], ea, False)
        batch = _numel(a[:-2]) if len(a) > 2 else 1
        return _gemm(a[-2], b[-1], a[-1], batch, [(a, ea), (b, eb)], ea, False)
    if name in ("aten::_weight_int8pack_mm",):
        (a, ea), (w, ew) = t[0], t[1]
        return _gemm(_numel(a[:-1]), w[0], a[-1], 1, t[:3], ea, False)
    if name in ("aten::_weight_int4pack_mm", "aten::_weight_int4pack_mm_for_cpu"):
        (a, ea) = t[0]
        sz = t[-1][0]  # scales and zeros [K / group, N, 2]
        n, k = sz[1], a[-1]
        return _gemm(_numel(a[:-1]), n, k, 1, t, ea, False)
    if name in ATTENTION:
        (q, eq), (k, ek), (v, ev) = t[0], t[1], t[2]
        b, h, lq, d = _numel(q[:-3]), q[-3], q[-2], q[-1]
        lk = k[-2]
        causal = any(c is True for c in concrete[3:6]) if concrete else False
        flops = 4.0 * b * h * lq * lk * d * (0.5 if causal else 1.0)
        nbytes = (_numel(q) * eq) * 2 + _numel(k) * ek + _numel(v) * ev
        return OpCost(flops, nbytes, "attention")
    if name in ("aten::convolution", "aten::conv2d", "aten::conv1d", "aten::_convolution"):
        (x, ex), (w, ew) = t[0], t[1]
        dims = len(x) - 2
        stride, pad, dil = (_ints(concrete, i, dims, d) for i, d in ((3, 1), (4, 0), (5, 1)))
        groups = (
            concrete[8]
            if name == "aten::convolution" and len(concrete) > 8 and isinstance(concrete[8], int)
            else 1
        )
        out_sp = [(x[2 + i] + 2 * pad[i] - dil[i] * (w[2 + i] - 1) - 1) // stride[i] + 1 for i in range(dims)]
        out = x[0] * w[0] * math.prod(out_sp)
        flops = 2.0 * out * (x[1] // groups) * math.prod(w[2:])
        return OpCost(flops, _numel(x) * ex + _numel(w) * ew + out * ex, "conv")
    if name == "aten::embedding":
        (w, ew), (idx, ei) = t[0], t[1]
        return OpCost(0.0, _numel(idx) * (w[-1] * ew * 2 + ei), "embedding")
    if name in ELEMENTWISE:
        out = max((_numel(s) for s, _ in t), default=0)
        return OpCost(
            float(out), sum(_numel(s) * e for s, e in t) + out * (t[0][1] if t else 4), "elementwise"
        )
    if name in REDUCTIONS:
        (x, ex) = t[0]
        return OpCost(
            float(REDUCTIONS[name] * _numel(x)),
            2.0 * _numel(x) * ex if "norm" in name or "softmax" in name else _numel(x) * ex,
            "reduction",
        )
    if name in COPIES:
        if not t:
            return None
        n = sum(_numel(s) * e for s, e in t)
        return OpCost(0.0, 2.0 * n if name not in ("aten::fill_", "aten::zero_") else float(n), "copy")
    return None


def _ints(concrete: list[Any], i: int, dims: int, default: int) -> list[int]:
    v = concrete[i] if i < len(concrete) else None
    if isinstance(v, (list, tuple)) and v:
        return [int(x) for x in v] * (dims if len(v) == 1 else 1)
    if isinstance(v, int):
        return [v] * dims
    return [default] * dims
