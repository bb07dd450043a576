"""Tiled matmul in Triton, dtype-generic (fp32, fp16, bf16, fp8 with scales), with a host wrapper and a reference.

C[M, N] = (A[M, K] * scale_a) @ (B[K, N] * scale_b), accumulated in fp32 and stored in C's dtype. Each program
owns a BLOCK_M x BLOCK_N tile of C and walks K in BLOCK_K steps, so every A and B element is read from DRAM
about N / BLOCK_N and M / BLOCK_M times: tiles large enough to reach the tensor cores' arithmetic intensity,
small enough to keep two or three stages in shared memory. Programs are grouped along M (GROUP_M) so
neighbouring programs reuse the same B tiles from L2.

Scales follow torch._scaled_mm: per-tensor (one float each) or row-wise (scale_a[M, 1], scale_b[1, N]); they
are applied once to the fp32 accumulator, which is exact where a per-element dequantization would round.

Checked on the CPU with TRITON_INTERPRET=1 for fp32, fp16 and fp8 e4m3 (tests/test_matmul_kernel.py); bf16
and the autotuned configurations only on a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

KERNEL_META = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")  # a config's other keys are compiler options


def _configs(backend: str | None = None) -> list[triton.Config]:
    """The autotuner's tiles for `backend` ("cuda" or "hip"; default: the one this torch build runs)."""
    if (backend or ("hip" if torch.version.hip else "cuda")) == "hip":
        return _hip_configs()
    # A handful of Hopper/Ampere/Ada-friendly tiles: 128x256 and 256x128 for big squares, 64-wide for
    # skinny shapes, fewer stages where shared memory is the limit (L40S/4090: 100 KB per SM).
    shapes = [
        (128, 256, 64, 3, 8),
        (256, 128, 64, 3, 8),
        (128, 128, 64, 4, 4),
        (128, 128, 128, 3, 8),
        (64, 256, 64, 4, 4),
        (64, 128, 64, 4, 4),
        (32, 64, 128, 4, 4),
    ]
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8}, num_stages=s, num_warps=w)
        for m, n, k, s, w in shapes
    ]


def _hip_configs() -> list[triton.Config]:
    # CDNA (MI200/MI300): Triton's AMD backend pipelines through LDS with num_stages=2 (its default; deeper
    # stages only cost LDS, 64 KiB per workgroup), a wave is 64 lanes (num_warps=4: a 256-thread workgroup),
    # matrix_instr_nonkdim=16 asks for the 16x16 MFMA, and waves_per_eu caps occupancy so the big tiles keep
    # their registers: the knobs Triton's own matmul tutorial tunes on HIP. Every tile here compiles for
    # gfx90a and gfx942 within the LDS limit (tests/test_kernels_aot.py).
    shapes = [  # (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, waves_per_eu)
        (256, 256, 32, 8, 2),
        (256, 128, 64, 8, 2),
        (128, 256, 64, 8, 2),
        (128, 128, 64, 4, 2),
        (64, 128, 64, 4, 0),
        (64, 64, 128, 4, 0),
        (32, 64, 128, 4, 0),
    ]
    return [
        triton.Config(
            {
                "BLOCK_M": m,
                "BLOCK_N": n,
                "BLOCK_K": k,
                "GROUP_M": 8,
                "matrix_instr_nonkdim": 16,
                "waves_per_eu": e,
            },
            num_stages=2,
            num_warps=w,
        )
        for m, n, k, w, e in shapes
    ]


@triton.jit
def matmul_kernel(
    a_ptr,  # A[M, K], any strides
    b_ptr,  # B[K, N], any strides (a column-major B is W[N, K] of a linear layer, transposed)
    c_ptr,  # C[M, N] output
    sa_ptr,  # scale of A: one value (stride 0) or one per row of A
    sb_ptr,  # scale of B: one value (stride 0) or one per column of B
    M,
    N,
    K,
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    stride_cm,
    stride_cn,
    stride_sa,  # 0 for a per-tensor scale, 1 for row-wise
    stride_sb,  # 0 for a per-tensor scale, 1 for column-wise
    BLOCK_M: tl.constexpr,  # rows of C per program
    BLOCK_N: tl.constexpr,  # columns of C per program
    BLOCK_K: tl.constexpr,  # depth of one step along K
    GROUP_M: tl.constexpr,  # programs grouped along M for L2 reuse of B tiles
    FP8_FAST_ACCUM: tl.constexpr,  # fp8 on sm_90: accumulate imprecisely (Triton's default) or promote per tile
):
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    group = GROUP_M * num_n
    first_m = (pid // group) * GROUP_M
    group_size = min(num_m - first_m, GROUP_M)
    pid_m = first_m + ((pid % group) % group_size)
    pid_n = (pid % group) // group_size

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rm[:, None].to(tl.int64) * stride_am + rk[None, :] * stride_ak
    b_ptrs = b_ptr + rk[:, None] * stride_bk + rn[None, :].to(tl.int64) * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K
        a = tl.load(a_ptrs, mask=(rm[:, None] < M) & (rk[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=(rk[:, None] < k_left) & (rn[None, :] < N), other=0.0)
        if FP8_FAST_ACCUM:  # noqa: SIM108 (a constexpr branch, resolved at compile time)
            acc = tl.dot(a, b, acc)  # sm_90 fp8: Triton's default, the WGMMA accumulator is never promoted
        else:
            # promote the fp8 partial sums to the fp32 accumulator once per K tile, as cuBLAS's precise mode
            acc = tl.dot(a, b, acc, max_num_imprecise_acc=BLOCK_K)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    sa = tl.load(sa_ptr + rm * stride_sa, mask=rm < M, other=1.0)
    sb = tl.load(sb_ptr + rn * stride_sb, mask=rn < N, other=1.0)
    acc = acc * sa[:, None] * sb[None, :]
    c_ptrs = c_ptr + rm[:, None].to(tl.int64) * stride_cm + rn[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))


matmul_kernel_autotuned = triton.autotune(configs=_configs(), key=["M", "N", "K"])(matmul_kernel)


def _scale(s: torch.Tensor | None, n: int, device: torch.device) -> tuple[torch.Tensor, int]:
    if s is None:
        return torch.ones(1, dtype=torch.float32, device=device), 0
    s = s.to(torch.float32).reshape(-1)
    if s.numel() == 1:
        return s, 0
    if s.numel() != n:
        raise ValueError(f"scale has {s.numel()} values; expected 1 or {n}")
    return s.contiguous(), 1


def triton_matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    out: torch.Tensor | None = None,
    *,
    scale_a: torch.Tensor | None = None,
    scale_b: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    config: dict[str, int] | None = None,
    fp8_fast_accum: bool = False,
) -> torch.Tensor:
    """C = (A * scale_a) @ (B * scale_b). `config` fixes the tiles (tests, interpreter); else autotuned.

    `fp8_fast_accum` is torch._scaled_mm's `use_fast_accum`: the same accumulation mode for both variants, so
    cuBLAS and Triton fp8 figures compare like for like (only fp8 on sm_90 differs between the modes)."""
    M, K = a.shape
    K2, N = b.shape
    if K != K2:
        raise ValueError(f"inner dimensions differ: A is {tuple(a.shape)}, B is {tuple(b.shape)}")
    if out is None:
        default = torch.bfloat16 if a.element_size() == 1 else a.dtype
        out = torch.empty((M, N), dtype=out_dtype or default, device=a.device)
    sa, ssa = _scale(scale_a, M, a.device)
    sb, ssb = _scale(scale_b, N, a.device)
    args = (a, b, out, sa, sb, M, N, K, *a.stride(), *b.stride(), *out.stride(), ssa, ssb)
    if config is not None:
        grid = (triton.cdiv(M, config["BLOCK_M"]) * triton.cdiv(N, config["BLOCK_N"]),)
        matmul_kernel[grid](
            *args,
            GROUP_M=config.get("GROUP_M", 8),
            FP8_FAST_ACCUM=fp8_fast_accum,
            **{k: v for k, v in config.items() if k != "GROUP_M"},
        )
    else:

        def grid(meta: dict[str, int]) -> tuple[int]:
            return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

        matmul_kernel_autotuned[grid](*args, FP8_FAST_ACCUM=fp8_fast_accum)
    return out


def _take(t: torch.Tensor, dim: int, idx: torch.Tensor) -> torch.Tensor:
    # Gather kernels do not cover every float8 type on every backend; bytes are bytes.
    if t.element_size() == 1 and t.is_floating_point():
        return t.view(torch.uint8).index_select(dim, idx).view(t.dtype)
    return t.index_select(dim, idx)


def ref_matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    scale_a: torch.Tensor | None = None,
    scale_b: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
    cols: torch.Tensor | None = None,
) -> torch.Tensor:
    """float64 reference of (A * scale_a) @ (B * scale_b) on A's device, restricted to `rows` x `cols`.

    Restricting first keeps the reference of a 128k-vocabulary LM head or a 16k square cheap: only the
    sampled rows of A and columns of B are ever converted to float64.
    """
    if rows is not None:
        a = _take(a, 0, rows)
        if scale_a is not None and scale_a.numel() > 1:
            scale_a = scale_a.reshape(-1, 1).index_select(0, rows)
    if cols is not None:
        b = _take(b, 1, cols)
        if scale_b is not None and scale_b.numel() > 1:
            scale_b = scale_b.reshape(1, -1).index_select(1, cols)
    a64 = a.to(torch.float64)
    b64 = b.to(torch.float64)
    if scale_a is not None:
        a64 = a64 * scale_a.to(torch.float64).reshape(-1, 1)
    if scale_b is not None:
        b64 = b64 * scale_b.to(torch.float64).reshape(1, -1)
    return a64 @ b64
