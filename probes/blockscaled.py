"""Blackwell's block-scaled formats: MXFP8, MXFP4 (OCP Microscaling v1.0) and NVFP4, made, packed and checked.

A block of consecutive elements along K shares one scale:
- MXFP8: E4M3 elements, 32 per block, an E8M0 scale (a power of two): the smallest that brings the block's
  amax within E4M3's 448, so its largest element lands in (224, 448];
- MXFP4: E2M1 elements (0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives), 32 per block, an E8M0 scale: the
  smallest power of two that brings amax within 6;
- NVFP4: E2M1 elements, 16 per block, an E4M3 scale per block (amax / 6, rounded to E4M3) under one fp32
  per-tensor scale (the tensor's amax / (448 x 6), so the block scales use E4M3's whole range).
Elements that land beyond the element format's largest value saturate to it (the spec's clamp). FP4 elements
pack two per byte, the first of each pair in the low nibble (torch.float4_e2m1fn_x2). cuBLAS reads the scales of
an [R, C] operand in tiles of 128 rows x 4 scale columns (SwizzleType.SWIZZLE_32_4_4): `swizzle` lays them out so.

The reference is the float64 product of the dequantized operands (the values the codes and scales describe),
so a correct kernel differs from it only by fp32 accumulation order and the bf16 output's rounding.

    torch.nn.functional.scaled_mm(*scaled_mm_args(qa, qb), output_dtype=torch.bfloat16)   # sm_100+
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

FORMATS = {"mxfp8": (32, "e8m0"), "mxfp4": (32, "e8m0"), "nvfp4": (16, "e4m3")}  # block size, scale type
FP4_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # E2M1 magnitudes by code 0..7 (bit 3 is the sign)
FP4_MAX, E4M3_MAX = 6.0, 448.0


@dataclass
class BlockScaled:
    """One operand [R, K] in a block-scaled format: its element data, the block scales, the tensor scale."""

    fmt: str
    data: torch.Tensor  # [R, K] float8_e4m3fn (mxfp8), or [R, K // 2] uint8: two E2M1 codes per byte
    scales: torch.Tensor  # [R, K // block] float32, each exactly an E8M0 power of two or an E4M3 value
    global_scale: float = 1.0  # NVFP4's per-tensor scale; 1 for the MX formats
    k: int = 0

    @property
    def block(self) -> int:
        return FORMATS[self.fmt][0]


def check_shape(fmt: str, m: int, n: int, k: int) -> str | None:
    """Why an M x N x K GEMM cannot run in `fmt` (None when it can). torch's block-scaled path needs K and N
    multiples of 16 (aten ScaledBlas.cpp, _scaled_mm_cuda_v2_out) and K whole blocks; upstream tests use K % 32.
    M is free: the scale tiles are padded to 128 rows (`swizzle`)."""
    if k % 32:
        return f"{fmt} needs K to be a multiple of 32 (whole scale blocks), got {k}"
    if n % 16:
        return f"{fmt} needs N to be a multiple of 16, got {n}"
    return None


def e2m1_codes(v: torch.Tensor) -> torch.Tensor:
    """E2M1 codes (uint8 0..15) of float values: nearest grid value, ties to the even code (round half to even,
    as the hardware's cvt.rn does), magnitudes beyond 6 saturated to 6, bit 3 the sign."""
    grid = torch.tensor(FP4_GRID, dtype=torch.float64, device=v.device)
    mids = (grid[:-1] + grid[1:]) / 2  # 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5
    mag = v.abs().to(torch.float64).clamp(max=FP4_MAX)
    code = torch.bucketize(mag, mids)  # a value exactly on a midpoint goes to the lower code...
    on_mid = mag == mids[code.clamp(max=len(mids) - 1)]
    code = code + (on_mid & (code % 2 == 1)).to(code.dtype)  # ...unless that code is odd
    return code.to(torch.uint8) | ((v < 0).to(torch.uint8) << 3)


def e2m1_values(codes: torch.Tensor) -> torch.Tensor:
    grid = torch.tensor(FP4_GRID, dtype=torch.float64, device=codes.device)
    mag = grid[(codes & 7).long()]
    return torch.where((codes & 8) != 0, -mag, mag)


def pack_fp4(codes: torch.Tensor) -> torch.Tensor:
    """[R, K] codes -> [R, K // 2] bytes: element 2i in the low nibble, 2i + 1 in the high one."""
    return (codes[..., 0::2] & 0xF) | ((codes[..., 1::2] & 0xF) << 4)


def unpack_fp4(packed: torch.Tensor) -> torch.Tensor:
    out = torch.empty((*packed.shape[:-1], packed.shape[-1] * 2), dtype=torch.uint8, device=packed.device)
    out[..., 0::2], out[..., 1::2] = packed & 0xF, packed >> 4
    return out


def _e8m0(amax: torch.Tensor, top: float) -> torch.Tensor:
    """The MX scale of blocks with these amax: the smallest power of two with amax / scale <= `top` (the element
    format's largest value), within E8M0's 2^-127..2^127. (The OCP spec's 2^(floor(log2 amax) - emax) can put a
    block's largest element above E4M3's 448 and clip it by up to 1/8; rounding the exponent up, as NVIDIA's
    and torchao's MXFP8 recipes do, never clips.)"""
    exp = torch.ceil(torch.log2(amax.clamp(min=2.0**-127) / top))
    return torch.pow(2.0, exp.clamp(-127, 127)).to(torch.float32)


def _round_e4m3(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32).clamp(max=E4M3_MAX).to(torch.float8_e4m3fn).to(torch.float32)


def quantize(x: torch.Tensor, fmt: str) -> BlockScaled:
    """`x` [R, K] (any float dtype) in `fmt`: the codes, the block scales and the tensor scale."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown block-scaled format {fmt!r} (known: {', '.join(FORMATS)})")
    block, _ = FORMATS[fmt]
    rows, k = x.shape
    if k % block:
        raise ValueError(f"{fmt}: K = {k} is not a multiple of the block ({block})")
    xb = x.to(torch.float32).reshape(rows, k // block, block)
    amax = xb.abs().amax(dim=-1)
    g = 1.0
    if fmt == "nvfp4":
        total = float(amax.max()) if amax.numel() else 0.0
        g = total / (E4M3_MAX * FP4_MAX) if total > 0 else 1.0
        scales = _round_e4m3(amax / FP4_MAX / g)
    else:
        scales = _e8m0(amax, E4M3_MAX if fmt == "mxfp8" else FP4_MAX)
    div = (scales * g).unsqueeze(-1)
    scaled = torch.where(div > 0, xb / torch.where(div > 0, div, 1.0), 0.0).reshape(rows, k)
    if fmt == "mxfp8":
        data = scaled.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    else:
        data = pack_fp4(e2m1_codes(scaled))
    return BlockScaled(fmt, data, scales, g, k)


def dequantize(q: BlockScaled) -> torch.Tensor:
    """The float64 values [R, K] the operand describes."""
    elems = q.data.to(torch.float64) if q.fmt == "mxfp8" else e2m1_values(unpack_fp4(q.data))
    rows = elems.shape[0]
    s = q.scales.to(torch.float64).repeat_interleave(q.block, dim=1)
    return (elems * s * q.global_scale).reshape(rows, q.k)


def swizzle(scales: torch.Tensor) -> torch.Tensor:
    """[R, C] block scales -> cuBLAS's layout: 128 x 4 tiles, each stored as 32 rows of (4 x 4) interleaved
    (row r of a tile at (r % 32, r // 32)), tiles in row-major order; R and C padded to 128 and 4."""
    r, c = scales.shape
    rp, cp = -(-r // 128) * 128, -(-c // 4) * 4
    padded = torch.zeros((rp, cp), dtype=scales.dtype, device=scales.device)
    padded[:r, :c] = scales
    tiles = padded.view(rp // 128, 128, cp // 4, 4).permute(0, 2, 1, 3)  # [tile row, tile col, 128, 4]
    return tiles.reshape(-1, 4, 32, 4).transpose(1, 2).reshape(-1).contiguous()


def unswizzle(flat: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    rp, cp = -(-rows // 128) * 128, -(-cols // 4) * 4
    tiles = flat.view(-1, 32, 4, 4).transpose(1, 2).reshape(rp // 128, cp // 4, 128, 4)
    return tiles.permute(0, 2, 1, 3).reshape(rp, cp)[:rows, :cols]


def scale_tensor(q: BlockScaled, swizzled: bool = True) -> torch.Tensor:
    """The block scales in the dtype scaled_mm reads (E8M0 or E4M3), in cuBLAS's tile layout."""
    s = swizzle(q.scales) if swizzled else q.scales
    return s.to(torch.float8_e8m0fnu if FORMATS[q.fmt][1] == "e8m0" else torch.float8_e4m3fn)


def scaled_mm_args(qa: BlockScaled, qb: BlockScaled) -> dict[str, Any]:
    """Keyword arguments of torch.nn.functional.scaled_mm for A [M, K] x W [N, K]^T in one format."""
    import torch.nn.functional as F

    recipe = F.ScalingType.BlockWise1x16 if qa.fmt == "nvfp4" else F.ScalingType.BlockWise1x32
    swz = F.SwizzleType.SWIZZLE_32_4_4

    def mat(q: BlockScaled) -> torch.Tensor:
        return q.data if q.fmt == "mxfp8" else q.data.view(torch.float4_e2m1fn_x2)

    def scale(q: BlockScaled) -> Any:
        if q.fmt != "nvfp4":
            return scale_tensor(q), recipe, swz
        tensor = torch.tensor(q.global_scale, dtype=torch.float32, device=q.data.device)
        return [scale_tensor(q), tensor], [recipe, F.ScalingType.TensorWise], [swz, F.SwizzleType.NO_SWIZZLE]

    sa, ra, wa = scale(qa)
    sb, rb, wb = scale(qb)
    return {
        "mat_a": mat(qa),
        "mat_b": mat(qb).t(),
        "scale_a": sa,
        "scale_recipe_a": ra,
        "scale_b": sb,
        "scale_recipe_b": rb,
        "swizzle_a": wa,
        "swizzle_b": wb,
    }


def bytes_per_element(fmt: str) -> float:
    """Element bytes plus the block scale's share (a byte per block)."""
    return (1.0 if fmt == "mxfp8" else 0.5) + 1.0 / FORMATS[fmt][0]
