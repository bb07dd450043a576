"""Triton STREAM kernels against their torch references, in the interpreter on the CPU (fp32, fp16) and
compiled on a GPU (adds bf16). Sizes are deliberately not multiples of the block, so masks are exercised."""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl
from helpers import requires_cuda

from kernels import stream as ks
from probes.verify import compare, poison, tolerance

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16]
SIZES = [1, 1000, 4097]  # BLOCK below is 256 or 1024: tails of 1..1023 elements
BLOCKS = [256, 1024]


def _inputs(n: int, dtype: torch.dtype, k: int, device: str = DEVICE) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(n * 31 + k)
    return [torch.empty(n).uniform_(0.5, 1.5, generator=g).to(dtype).to(device) for _ in range(k)]


def check_read(x: torch.Tensor, block: int) -> str | None:
    partials = ks.partials_for(x, block)
    poison(partials)
    ks.triton_read(x, partials, block)
    got = partials.double().sum().reshape(1)
    return compare(got, ks.ref_read(x).reshape(1), rtol=1e-4, atol=0, name="read")


def check_write(x: torch.Tensor, block: int) -> str | None:
    poison(x)
    ks.triton_write(x, 1.5, block)
    return compare(x, lambda lo, hi: ks.ref_write(1.5, lo, hi, x.device), rtol=0, atol=0, name="write")


def check_copy(src: torch.Tensor, dst: torch.Tensor, block: int, kernel=ks.triton_copy) -> str | None:
    poison(dst)
    kernel(src, dst, block)
    return compare(dst, lambda lo, hi: ks.ref_copy(src, lo, hi), rtol=0, atol=0, name="copy")


def check_triad(a, b, c, block: int, kernel=ks.triton_triad) -> str | None:
    poison(a)
    kernel(a, b, c, 3.0, block)
    rtol, atol = tolerance(a.dtype)
    return compare(a, lambda lo, hi: ks.ref_triad(b, c, 3.0, lo, hi), rtol=rtol, atol=atol, name="triad")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("block", BLOCKS)
def test_stream_kernels_match_references(dtype, n, block):
    (x,) = _inputs(n, dtype, 1)
    assert check_read(x, block) is None
    assert check_write(x, block) is None
    src, dst = _inputs(n, dtype, 2)
    assert check_copy(src, dst, block) is None
    a, b, c = _inputs(n, dtype, 3)
    assert check_triad(a, b, c, block) is None


# ---- deliberately wrong kernels: the checker must reject each ------------------------------------------


@triton.jit
def _copy_drops_tail(src_ptr, dst_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n - 1  # off by one: the last element is never written
    tl.store(dst_ptr + offs, tl.load(src_ptr + offs, mask=mask), mask=mask)


@triton.jit
def _triad_forgets_scalar(a_ptr, b_ptr, c_ptr, scalar, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(a_ptr + offs, tl.load(b_ptr + offs, mask=mask) + tl.load(c_ptr + offs, mask=mask), mask=mask)


def test_checker_rejects_a_copy_that_skips_the_tail():
    src, dst = _inputs(1000, torch.float32, 2)

    def bad(s, d, block):
        _copy_drops_tail[(triton.cdiv(s.numel(), block),)](s, d, s.numel(), BLOCK=block)

    msg = check_copy(src, dst, 256, kernel=bad)
    assert msg is not None
    assert "1 of 1000 elements differ" in msg and "[999] got nan" in msg


def test_checker_rejects_a_triad_with_the_wrong_formula():
    a, b, c = _inputs(777, torch.float16, 3)

    def bad(a, b, c, s, block):
        _triad_forgets_scalar[(triton.cdiv(a.numel(), block),)](a, b, c, s, a.numel(), BLOCK=block)

    msg = check_triad(a, b, c, 256, kernel=bad)
    assert msg is not None and "777 of 777 elements differ" in msg


def test_checker_rejects_a_read_that_misses_a_block():
    (x,) = _inputs(4097, torch.float32, 1)
    partials = ks.partials_for(x, 1024)
    ks.triton_read(x, partials, 1024)
    assert compare(partials.double().sum().reshape(1), ks.ref_read(x).reshape(1), rtol=1e-4, atol=0) is None
    partials[0] = 0.0  # a whole 1024-element block lost: 25 % of the sum
    assert (
        compare(partials.double().sum().reshape(1), ks.ref_read(x).reshape(1), rtol=1e-4, atol=0) is not None
    )


@requires_cuda
@pytest.mark.parametrize("n", SIZES)
def test_stream_kernels_bf16_on_gpu(n):
    (x,) = _inputs(n, torch.bfloat16, 1, "cuda")
    assert check_read(x, 1024) is None
    assert check_write(x, 1024) is None
    src, dst = _inputs(n, torch.bfloat16, 2, "cuda")
    assert check_copy(src, dst, 1024) is None
    a, b, c = _inputs(n, torch.bfloat16, 3, "cuda")
    assert check_triad(a, b, c, 1024) is None


@requires_cuda
def test_stream_kernels_at_default_block_on_gpu():
    n = (1 << 22) + 3
    a, b, c = _inputs(n, torch.float32, 3, "cuda")
    assert check_triad(a, b, c, ks.DEFAULT_BLOCK) is None
    assert check_copy(b, c, ks.DEFAULT_BLOCK) is None
