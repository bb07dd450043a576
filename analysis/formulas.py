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
