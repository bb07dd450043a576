"""One GEMM of a dtype: how it is made, run and checked, and whether a device can run it at all.

Weights are W[N, K] as in a linear layer, multiplied as W^T (the layout frameworks use, and the column-major
B that _scaled_mm needs). Dtypes: fp32 (TF32 off), tf32, fp16, bf16 (torch.matmul), fp8 e4m3 x e4m3 through
torch._scaled_mm with per-tensor and with row-wise scales, fp8 e5m2 (A) x e4m3 (B), int8 through
torch._int_mm (int32 out); FP8 outputs are bf16; weight-only int8 and int4 (bf16 activations, probes.quant).
Inputs are uniform in [-1, 1], never zeros.

The checker compares output rows and columns (all of them for small problems, a sample including the first and
last for big ones) with a float64 reference on the same quantized inputs: |C - ref| <= c * (sqrt(K) * s + |ref|)
where s is the product of the scales and c per dtype: fp32 1e-5 (order of summation), tf32 5e-3 (10-bit
inputs), fp16 5e-3 and bf16 2e-2 (output rounding and reduced-precision split-K), fp8 2e-2 (bf16 output),
int8 exact, weight-only 2e-2 (bf16 output against the float64 product with the dequantized weight). Which
architecture runs which dtype is a hardware fact of the spec database.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from analysis import specs
from probes import blockscaled, quant
from probes.capability import (  # noqa: F401  (re-exported: where the probes and tests look for them)
    capability_reason,
    device_reason,
    platform_of,
    shape_reason,
)
from probes.verify import compare

CHECK_ROWS, CHECK_COLS = 64, 256  # sampled for big problems; first and last always included


@dataclass(frozen=True)
class DtypeSpec:
    """How one matmul dtype is run and checked."""

    key: str
    a: torch.dtype
    b: torch.dtype
    out: torch.dtype
    scaling: str  # "none", "per-tensor", "row-wise", "weight-only"
    tol: float  # c in |C - ref| <= c * (sqrt(K) * s + |ref|)

    @property
    def weight_only(self) -> bool:
        return self.scaling == "weight-only"

    def bytes_per_weight(self, group_size: int = 128) -> float:
        if self.weight_only:
            return quant.bytes_per_weight(self.key, group_size)
        if self.scaling == "block":
            return blockscaled.bytes_per_element(self.key)
        return torch.empty((), dtype=self.b).element_size()


def dtype_spec(key: str, fp8_fnuz: bool = False) -> DtypeSpec:
    """The spec of a bench.toml dtype key; `fp8_fnuz` picks the MI300 (gfx942) FP8 encodings."""
    e4m3 = getattr(torch, "float8_e4m3fnuz" if fp8_fnuz else "float8_e4m3fn", None)
    e5m2 = getattr(torch, "float8_e5m2fnuz" if fp8_fnuz else "float8_e5m2", None)
    specs = {
        "fp32": DtypeSpec("fp32", torch.float32, torch.float32, torch.float32, "none", 1e-5),
        "tf32": DtypeSpec("tf32", torch.float32, torch.float32, torch.float32, "none", 5e-3),
        "fp16": DtypeSpec("fp16", torch.float16, torch.float16, torch.float16, "none", 5e-3),
        "bf16": DtypeSpec("bf16", torch.bfloat16, torch.bfloat16, torch.bfloat16, "none", 2e-2),
        "fp8_e4m3": DtypeSpec("fp8_e4m3", e4m3, e4m3, torch.bfloat16, "per-tensor", 2e-2),
        "fp8_e4m3_rowwise": DtypeSpec("fp8_e4m3_rowwise", e4m3, e4m3, torch.bfloat16, "row-wise", 2e-2),
        "fp8_e5m2": DtypeSpec("fp8_e5m2", e5m2, e4m3, torch.bfloat16, "per-tensor", 2e-2),
        "int8": DtypeSpec("int8", torch.int8, torch.int8, torch.int32, "none", 0.0),
        "int8-wo": DtypeSpec("int8-wo", torch.bfloat16, torch.int8, torch.bfloat16, "weight-only", 2e-2),
        "int4-wo": DtypeSpec("int4-wo", torch.bfloat16, torch.uint8, torch.bfloat16, "weight-only", 2e-2),
    }
    if key in blockscaled.FORMATS:  # elements in E4M3, or two E2M1 per byte; bf16 out (probes.blockscaled)
        elem = e4m3 if key == "mxfp8" else torch.uint8
        return DtypeSpec(key, elem, elem, torch.bfloat16, "block", 2e-2)
    return specs[key]


def spec_for(key: str, device: torch.device) -> DtypeSpec:
    platform, _cc, arch = platform_of(device)
    return dtype_spec(
        key, fp8_fnuz=platform == "rocm" and arch.startswith(specs.rocm_archs("fp8_fnuz") or ())
    )


# ---- operands, the timed op, the checker ----------------------------------------------------------------


@dataclass
class Operands:
    a: torch.Tensor  # [M, K]
    w: torch.Tensor  # [N, K]: the weight of a linear layer; multiplied as w.t()
    c: torch.Tensor  # [M, N]
    scale_a: torch.Tensor | None
    scale_b: torch.Tensor | None
    qw: quant.QuantWeight | None = None  # weight-only formats: w is then the packed weight
    blocks: tuple[blockscaled.BlockScaled, blockscaled.BlockScaled] | None = None  # block-scaled A and W

    def rows(self, m: int) -> Operands:
        """The first m rows of A and C (decode sweeps reuse one allocation for every batch size)."""
        sa = self.scale_a[:m] if self.scale_a is not None and self.scale_a.numel() > 1 else self.scale_a
        return Operands(self.a[:m], self.w, self.c[:m], sa, self.scale_b, self.qw)

    def with_weight_copy(self) -> Operands:
        """A rotation member: the same A and scales, a copy of the weight and a C of its own."""
        c = torch.empty_like(self.c)
        if self.qw is None:
            return replace(self, w=self.w.clone(), c=c)
        qw = replace(self.qw, packed=self.qw.packed.clone(), scales=self.qw.scales.clone(), codes=None)
        return replace(self, w=qw.packed, qw=qw, c=c)


ROTATION_BYTES = 256 << 20  # decode GEMMs rotate over weight copies of at least this much in all...
MAX_ROTATION = 64  # ...and at most this many copies


def rotation_size(weight_bytes: int) -> int:
    """How many weight copies a decode-shaped GEMM rotates over: one flush, then every copy cold in turn.

    A decode step streams a different weight into every GEMM; a lone GEMM after a cache flush also pays the
    flush's after-effects (cold TLBs and page tables, write-backs still draining): on a 2-core VM an int4 GEMV
    of qwen2.5-0.5b's QKV took 0.16 ms flushed against 0.05 ms per copy rotating over 64 copies."""
    return max(1, min(MAX_ROTATION, -(-ROTATION_BYTES // max(weight_bytes, 1))))


def weight_rotation(spec: DtypeSpec, ops: Operands, free_bytes: float) -> list[Operands]:
    """The copies beside `ops` to rotate over: as many as rotation_size asks and `free_bytes` allows."""
    n, k = ops.w.shape[0] if ops.qw is None else ops.qw.n, ops.a.shape[1]
    weight_bytes = int(n * k * spec.bytes_per_weight())
    copies = min(
        rotation_size(weight_bytes) - 1, int((free_bytes - 2 * weight_bytes) // max(weight_bytes, 1))
    )
    try:
        return [ops.with_weight_copy() for _ in range(max(0, copies))]
    except torch.OutOfMemoryError:
        return []


def in_turn(fns: list[Callable[[], Any]]) -> Callable[[], Any]:
    """One call that runs each of `fns` in turn (the only one, when there is one)."""
    if len(fns) == 1:
        return fns[0]

    def run() -> None:
        for f in fns:
            f()

    return run


def operand_bytes(spec: DtypeSpec, m: int, n: int, k: int) -> int:
    """Device memory a case needs: A, W, C, plus the fp32 staging of the largest input while filling it."""
    sizes = {d: torch.empty((), dtype=d).element_size() for d in (spec.a, spec.b, spec.out)}
    # weight-only: the int8 codes kept for the checker and the int32 copy packing makes
    staging = 5 * n * k if spec.weight_only else 4 * max(m, n) * k
    return int(m * k * sizes[spec.a] + n * k * spec.bytes_per_weight() + m * n * sizes[spec.out] + staging)


def _random(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if dtype == torch.int8:
        return torch.randint(-64, 64, shape, dtype=torch.int8, device=device)
    # uniform in [-1, 1]: exactly representable range for every float dtype here, and never zeros
    return torch.empty(shape, dtype=torch.float32, device=device).uniform_(-1, 1).to(dtype)


def make_operands(
    spec: DtypeSpec, m: int, n: int, k: int, device: torch.device, group_size: int = 128
) -> Operands:
    if spec.scaling == "block":
        qa = blockscaled.quantize(_random((m, k), torch.float32, device), spec.key)
        qb = blockscaled.quantize(_random((n, k), torch.float32, device), spec.key)
        c = torch.empty((m, n), dtype=spec.out, device=device)
        return Operands(qa.data, qb.data, c, None, None, blocks=(qa, qb))
    a = _random((m, k), spec.a, device)
    if spec.weight_only:
        qw = quant.random_weight(spec.key, n, k, device, group_size)
        return Operands(a, qw.packed, torch.empty((m, n), dtype=spec.out, device=device), None, None, qw)
    w = _random((n, k), spec.b, device)
    c = torch.empty((m, n), dtype=spec.out, device=device)
    sa = sb = None
    if spec.scaling == "per-tensor":
        sa = torch.tensor(0.75, dtype=torch.float32, device=device)
        sb = torch.tensor(1.25, dtype=torch.float32, device=device)
    elif spec.scaling == "row-wise":
        sa = torch.empty((m, 1), dtype=torch.float32, device=device).uniform_(0.5, 1.5)
        sb = torch.empty((1, n), dtype=torch.float32, device=device).uniform_(0.5, 1.5)
    return Operands(a, w, c, sa, sb)


FP8_ACCUMULATION = ("precise", "fast")  # torch._scaled_mm's use_fast_accum False / True


def matmul_op(
    spec: DtypeSpec, variant: str, ops: Operands, fp8_accumulation: str = "precise"
) -> Callable[[], Any]:
    """The timed call for one dtype and variant; writes into ops.c.

    FP8 accumulation (`precise` or `fast`) is one mode for cuBLAS and Triton alike: _scaled_mm's
    use_fast_accum and the Triton kernel's FP8_FAST_ACCUM (Triton on sm_90 would default to fast)."""
    if fp8_accumulation not in FP8_ACCUMULATION:
        raise ValueError(f"fp8 accumulation {fp8_accumulation!r}: expected one of {FP8_ACCUMULATION}")
    fast = fp8_accumulation == "fast"
    a, b, c = ops.a, ops.w.t(), ops.c
    if variant == "triton":
        from kernels.matmul import triton_matmul

        return lambda: triton_matmul(a, b, c, scale_a=ops.scale_a, scale_b=ops.scale_b, fp8_fast_accum=fast)
    if spec.weight_only:
        qw = ops.qw
        assert qw is not None
        return lambda: c.copy_(qw.matmul(a))  # the kernels have no out=; the copy is M x N, small at decode M
    if (
        ops.blocks is not None
    ):  # scaled_mm has no out=: each call's C replaces the last (the checker reads it)
        import torch.nn.functional as F

        kwargs = blockscaled.scaled_mm_args(*ops.blocks)

        def block_mm() -> None:
            # fast accumulation is Hopper's FP8 mode: torch refuses it for FP4 and ignores it for MXFP8 on sm_100
            ops.c = F.scaled_mm(**kwargs, output_dtype=spec.out, use_fast_accum=False)

        return block_mm
    if spec.scaling != "none":
        sa, sb = ops.scale_a, ops.scale_b
        return lambda: torch._scaled_mm(
            a, b, scale_a=sa, scale_b=sb, out_dtype=spec.out, use_fast_accum=fast, out=c
        )
    if spec.key == "int8":
        return lambda: torch._int_mm(a, b, out=c)
    return lambda: torch.matmul(a, b, out=c)


def sample_indices(n: int, count: int, device: torch.device) -> torch.Tensor:
    if n <= count:
        return torch.arange(n, device=device)
    idx = (
        torch.linspace(0, n - 1, count, device=device).round().long()
    )  # spread over every tile, ends included
    return torch.unique(idx)


def make_checker(
    spec: DtypeSpec, ops: Operands, rotation: Sequence[Operands] = ()
) -> Callable[[], str | None]:
    """Compares (sampled) rows and columns of C, and of every rotation member's C (copies of the same
    weight), with a float64 reference computed once, up front."""
    from kernels.matmul import ref_matmul

    m, k = ops.a.shape
    n = ops.w.shape[0]
    rows, cols = sample_indices(m, CHECK_ROWS, ops.a.device), sample_indices(n, CHECK_COLS, ops.a.device)
    if ops.qw is not None:  # against the dequantized weight: x @ W^T of the weight the codes describe
        ref = ops.a.index_select(0, rows).to(torch.float64) @ ops.qw.dequantized(cols).t()
    elif ops.blocks is not None:  # the float64 product of what the codes and scales describe
        qa, qb = ops.blocks
        ref = (
            blockscaled.dequantize(qa).index_select(0, rows)
            @ blockscaled.dequantize(qb).index_select(0, cols).t()
        )
    else:
        ref = ref_matmul(ops.a, ops.w.t(), ops.scale_a, ops.scale_b, rows=rows, cols=cols)
    scale = 1.0
    for s in (ops.scale_a, ops.scale_b):
        if s is not None:
            scale *= float(s.abs().max())
    atol = spec.tol * math.sqrt(k) * scale

    def check() -> str | None:
        for i, o in enumerate([ops, *rotation]):
            got = o.c.index_select(0, rows).index_select(1, cols)
            which = f"C of weight copy {i}" if i else "C"
            name = f"{which} ({len(rows)} x {len(cols)} checked)"
            if problem := compare(got, ref, rtol=spec.tol, atol=atol, name=name):
                return problem
        return None

    return check


@contextlib.contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    """TF32 on for the tf32 cases, off for fp32 (so fp32 is real fp32 whatever the global default)."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
