"""Weight-only quantized linear layers as torch runs them: int8 per output channel, int4 in groups along K.

Serving engines keep the activations in bf16 and store the weights in 8 or 4 bits; each kernel reads the
small weights and dequantizes them on the fly. A weight W[N, K] becomes

    int8-wo   W ~ q[n, k] * s[n]                              q in -128..127, one bf16 scale per row
    int4-wo   W ~ (q[n, k] - 8) * s[g, n] + z[g, n]            q in 0..15, g = k // group_size

(the tinygemm convention gpt-fast and torchao use: scales and zeros as one bf16 tensor [K / G, N, 2]).
The kernels: torch._weight_int8pack_mm(x, q, s) on CPUs and GPUs; torch._weight_int4pack_mm on CUDA over
torch._convert_weight_to_int4pack(q as uint8 [N, K / 2], inner_k_tiles=8), and on CPUs
torch._weight_int4pack_mm_for_cpu over torch._convert_weight_to_int4pack_for_cpu(q int32 [N, K], 1).
Bytes read per weight: 1 and 0.5, plus int4's bf16 scale and zero per group (4 bytes per group and row):
analysis.formats.weight_bytes, the projection's own formula.

The reference is the float64 product with the dequantized weight, so a checker proves the kernel computes
x @ W^T of the weight the codes describe (not merely something finite).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from analysis.formats import weight_bytes
from analysis.headline import WEIGHT_ONLY
from probes.device import torch_version

ACTIVATION_DTYPE = torch.bfloat16  # what the weight-only kernels take and return
INT4_INNER_K_TILES = 8  # tinygemm's CUDA packing; K must be a multiple of 16 x this


@dataclass
class QuantWeight:
    """One quantized weight [N, K] in the layout its kernel runs, and (optionally) the codes it came from."""

    fmt: str
    n: int
    k: int
    group_size: int
    packed: torch.Tensor  # what the kernel reads
    scales: torch.Tensor  # int8-wo: [N]; int4-wo: scales and zeros [K / G, N, 2]
    codes: torch.Tensor | None  # int8 [N, K] codes for the reference (None once no checker needs them)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x[M, K] (bf16) @ W^T -> [M, N] bf16."""
        if self.fmt == "int8-wo":
            return torch._weight_int8pack_mm(x, self.packed, self.scales)
        if x.device.type == "cpu":
            return torch._weight_int4pack_mm_for_cpu(x, self.packed, self.group_size, self.scales)
        return torch._weight_int4pack_mm(x, self.packed, self.group_size, self.scales)

    def dequantized(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """float64 W (or its `rows`: output channels) as the codes and scales define it."""
        if self.codes is None:
            raise ValueError("the codes of this weight were dropped: no reference can be made")
        q = self.codes if rows is None else self.codes.index_select(0, rows)
        q = q.to(torch.float64)
        if self.fmt == "int8-wo":
            s = self.scales if rows is None else self.scales.index_select(0, rows)
            return q * s.to(torch.float64)[:, None]
        sz = self.scales if rows is None else self.scales.index_select(1, rows)
        s = sz[..., 0].to(torch.float64).t().repeat_interleave(self.group_size, dim=1)
        z = sz[..., 1].to(torch.float64).t().repeat_interleave(self.group_size, dim=1)
        return (q - 8) * s + z

    def nbytes(self) -> int:
        return self.packed.numel() * self.packed.element_size() + self.scales.numel() * 2


def bytes_per_weight(fmt: str, group_size: int = 128) -> float:
    """Bytes read per weight, the scales (and int4's zeros) included: the projection's one formula
    (analysis.formats.weight_bytes), so measured and projected bytes agree."""
    return weight_bytes(fmt, group_size)


INT8_REFERENCE_KERNEL_FROM = (2, 9)


def kernel_reason(fmt: str, platform: str, version: str | None = None) -> str | None:
    """Why torch's kernel for a weight-only format is not worth timing here (None when it is).

    From torch 2.9 `_weight_int8pack_mm` on CUDA / ROCm is a reference kernel, one thread per output with
    uncoalesced weight loads (pytorch/pytorch#190529: ~190 GB/s of an H20's 4 TB/s): its time is not what an
    engine's int8 weight-only GEMM takes, and projections built on it would be several times too slow."""
    if fmt != "int8-wo" or platform == "cpu":
        return None
    found = torch_version(version)
    if found is None or found < INT8_REFERENCE_KERNEL_FROM:
        return None
    return (
        "torch._weight_int8pack_mm on GPUs is a reference kernel from torch 2.9 (pytorch/pytorch#190529: "
        "one thread per output, uncoalesced loads); its time would misstate int8 weight-only decode"
    )


def shape_reason(fmt: str, n: int, k: int, group_size: int, platform: str) -> str | None:
    """Why a weight-only format cannot hold an N x K weight (None when it can)."""
    if fmt == "int4-wo":
        if k % group_size:
            return f"int4-wo: K = {k} is not a multiple of the group size {group_size}"
        if platform == "cpu" and n % 16:
            return f"torch._convert_weight_to_int4pack_for_cpu needs N % 16 == 0 (N = {n})"
        if platform == "rocm" and n % 16:  # tinygemm's kNTileSize on ROCm
            return f"torch._weight_int4pack_mm on ROCm needs N % 16 == 0 (N = {n})"
        if platform != "cpu" and (k % (16 * INT4_INNER_K_TILES) or n % 8):
            return f"torch._weight_int4pack_mm needs K % {16 * INT4_INNER_K_TILES} == 0 and N % 8 == 0 (N = {n}, K = {k})"
    return None


def random_weight(
    fmt: str,
    n: int,
    k: int,
    device: torch.device,
    group_size: int = 128,
    keep_codes: bool = True,
    scale: float = 1.0,
) -> QuantWeight:
    """Random codes and scales (dequantized weights of about `scale` in magnitude), packed for `device`."""
    if fmt not in WEIGHT_ONLY:
        raise ValueError(f"unknown weight-only format {fmt!r} (known: {', '.join(WEIGHT_ONLY)})")
    if fmt == "int8-wo":
        codes = torch.randint(-127, 128, (n, k), dtype=torch.int8, device=device)
        s = torch.empty(n, dtype=ACTIVATION_DTYPE, device=device).uniform_(0.5, 1.5).mul_(scale / 127)
        return QuantWeight(fmt, n, k, 1, codes, s, codes if keep_codes else None)
    groups = k // group_size
    codes = torch.randint(0, 16, (n, k), dtype=torch.int8, device=device)
    sz = torch.empty(groups, n, 2, dtype=ACTIVATION_DTYPE, device=device)
    sz[..., 0].uniform_(0.5, 1.5).mul_(scale / 8)
    sz[..., 1].uniform_(-0.5, 0.5).mul_(scale / 8)
    q32 = codes.to(torch.int32)
    if device.type == "cpu":
        packed = torch._convert_weight_to_int4pack_for_cpu(q32, 1)
    else:
        pairs = (q32[:, ::2] << 4 | q32[:, 1::2]).to(torch.uint8)  # two codes per byte, even k high
        packed = torch._convert_weight_to_int4pack(pairs, INT4_INNER_K_TILES)
    del q32
    return QuantWeight(fmt, n, k, group_size, packed, sz, codes if keep_codes else None)
