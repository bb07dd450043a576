"""The formulas, each in one place (DESIGN.md, "Formulas"). Plain arithmetic on SI numbers."""

from __future__ import annotations


def gemm_flops(m: int, n: int, k: int) -> int:
    """FLOPs of C[m, n] = A[m, k] @ B[k, n]: one multiply and one add per (m, n, k) triple."""
    return 2 * m * n * k


def gemm_bytes(m: int, n: int, k: int, a_elem: int, b_elem: int, c_elem: int) -> int:
    """Bytes a GEMM must move at the least: A, B and C each once (element sizes in bytes)."""
    return m * k * a_elem + k * n * b_elem + m * n * c_elem


def arithmetic_intensity(flops: float, nbytes: float) -> float:
    """FLOP per byte: where a kernel sits on the roofline's x axis."""
    return flops / nbytes


# Bus-bandwidth factors as nccl-tests defines them: the fraction of the message each rank must send over
# its slowest link in a ring (or equivalent) algorithm, so busbw compares with the link's wire rate
# whatever the rank count.
BUSBW_FACTORS = {
    "all_reduce": lambda n: 2 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
}


def alg_bandwidth(size_bytes: float, seconds: float) -> float:
    """algbw = S / t: message bytes (the full buffer, as nccl-tests counts it) per second."""
    return size_bytes / seconds


def bus_bandwidth(op: str, algbw: float, n: int) -> float:
    """busbw = algbw * 2(n-1)/n for all-reduce, * (n-1)/n for all-gather and reduce-scatter."""
    return algbw * BUSBW_FACTORS[op](n)
