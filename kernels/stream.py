"""STREAM-style memory kernels in Triton, with host wrappers and torch references.

Each kernel streams through memory once with no reuse, so its time is set by DRAM (or cache) bandwidth:

    read   s = sum(x)          N reads            (partial sums per block: N*elem / BLOCK extra writes)
    write  x = v               N writes
    copy   y = x               N reads + N writes
    triad  a = b + s*c         2N reads + N writes

Bytes are counted as STREAM does: each array element read or written once, no write-allocate traffic.
Arithmetic is done in float32 whatever the storage dtype, so the kernels are dtype-generic (fp32, fp16, bf16;
the interpreter cannot run bf16, see DESIGN.md).

Checked on the CPU with TRITON_INTERPRET=1 (tests/test_stream_kernels.py); timed only on a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

DEFAULT_BLOCK = 4096


@triton.jit
def read_kernel(
    x_ptr,  # input, N elements
    partial_ptr,  # float32 output, one partial sum per program
    n,  # number of elements
    BLOCK: tl.constexpr,  # elements per program
):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    tl.store(partial_ptr + pid, tl.sum(x.to(tl.float32), axis=0))


@triton.jit
def write_kernel(
    out_ptr,  # output, N elements
    value,  # float scalar written everywhere
    n,  # number of elements
    BLOCK: tl.constexpr,  # elements per program
):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    v = tl.zeros((BLOCK,), tl.float32) + value  # a runtime scalar broadcast; tl.full wants a constant
    tl.store(out_ptr + offs, v.to(out_ptr.dtype.element_ty), mask=offs < n)


@triton.jit
def copy_kernel(
    src_ptr,  # input, N elements
    dst_ptr,  # output, N elements
    n,  # number of elements
    BLOCK: tl.constexpr,  # elements per program
):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(dst_ptr + offs, tl.load(src_ptr + offs, mask=mask), mask=mask)


@triton.jit
def triad_kernel(
    a_ptr,  # output a = b + s*c, N elements
    b_ptr,  # input, N elements
    c_ptr,  # input, N elements
    scalar,  # float scalar s
    n,  # number of elements
    BLOCK: tl.constexpr,  # elements per program
):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    b = tl.load(b_ptr + offs, mask=mask).to(tl.float32)
    c = tl.load(c_ptr + offs, mask=mask).to(tl.float32)
    tl.store(a_ptr + offs, (b + scalar * c).to(a_ptr.dtype.element_ty), mask=mask)


def _grid(n: int, block: int) -> tuple[int]:
    return (triton.cdiv(n, block),)


def _warps(block: int) -> int:
    # 16 elements per thread keeps enough bytes in flight per SM to cover DRAM latency without spilling.
    return max(1, min(16, block // 512))


# ---- host wrappers -------------------------------------------------------------------------------------


def partials_for(x: torch.Tensor, block: int = DEFAULT_BLOCK) -> torch.Tensor:
    """The float32 buffer `triton_read` writes its per-program partial sums into."""
    return torch.empty(triton.cdiv(x.numel(), block), dtype=torch.float32, device=x.device)


def triton_read(x: torch.Tensor, partials: torch.Tensor, block: int = DEFAULT_BLOCK) -> torch.Tensor:
    n = x.numel()
    read_kernel[_grid(n, block)](x, partials, n, BLOCK=block, num_warps=_warps(block))
    return partials


def triton_write(out: torch.Tensor, value: float, block: int = DEFAULT_BLOCK) -> torch.Tensor:
    n = out.numel()
    write_kernel[_grid(n, block)](out, value, n, BLOCK=block, num_warps=_warps(block))
    return out


def triton_copy(src: torch.Tensor, dst: torch.Tensor, block: int = DEFAULT_BLOCK) -> torch.Tensor:
    n = src.numel()
    copy_kernel[_grid(n, block)](src, dst, n, BLOCK=block, num_warps=_warps(block))
    return dst


def triton_triad(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, scalar: float, block: int = DEFAULT_BLOCK
) -> torch.Tensor:
    n = a.numel()
    triad_kernel[_grid(n, block)](a, b, c, scalar, n, BLOCK=block, num_warps=_warps(block))
    return a


# ---- torch references (float64, on any slice [lo, hi) of the flattened arrays) --------------------------


def ref_read(x: torch.Tensor, chunk: int = 1 << 24) -> torch.Tensor:
    flat = x.reshape(-1)
    return sum(
        (flat[i : i + chunk].to(torch.float64).sum() for i in range(0, flat.numel(), chunk)),
        torch.zeros((), dtype=torch.float64, device=x.device),
    )


def ref_write(value: float, lo: int, hi: int, device: torch.device) -> torch.Tensor:
    return torch.full((hi - lo,), value, dtype=torch.float64, device=device)


def ref_copy(src: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    return src.reshape(-1)[lo:hi].to(torch.float64)


def ref_triad(b: torch.Tensor, c: torch.Tensor, scalar: float, lo: int, hi: int) -> torch.Tensor:
    return b.reshape(-1)[lo:hi].to(torch.float64) + scalar * c.reshape(-1)[lo:hi].to(torch.float64)
