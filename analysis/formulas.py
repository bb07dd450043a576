"""The formulas, each in one place (DESIGN.md, "Formulas"). Plain arithmetic on SI numbers."""

from __future__ import annotations

import itertools
import math
from typing import Any


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
    # each rank keeps 1/n of its buffer and sends the rest, one chunk to every other rank (nccl-tests alltoall)
    "all_to_all": lambda n: (n - 1) / n,
}


def alg_bandwidth(size_bytes: float, seconds: float) -> float:
    """algbw = S / t: message bytes (the full buffer, as nccl-tests counts it) per second."""
    return size_bytes / seconds


def bus_bandwidth(op: str, algbw: float, n: int) -> float:
    """busbw = algbw * 2(n-1)/n for all-reduce, * (n-1)/n for all-gather, reduce-scatter and all-to-all."""
    return algbw * BUSBW_FACTORS[op](n)


def interp_log_x(points: dict[Any, float], x: float) -> float:
    """{x: y} at x, linear in log(x) between points, flat beyond the ends."""
    xs = sorted(int(k) for k in points)
    ys = [float(points[str(k)] if str(k) in points else points[k]) for k in xs]
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    for (x0, y0), (x1, y1) in itertools.pairwise(zip(xs, ys, strict=True)):
        if x0 <= x <= x1:
            return y0 + (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0)) * (y1 - y0)
    return ys[-1]  # pragma: no cover


def energy_per_unit(
    avg_power_w: float, seconds_per_op: float, flops: float | None = None, nbytes: float | None = None
) -> dict[str, float | str]:
    """The energy of one op per unit of its work: average power over the case x the op's median time, per
    TFLOP (a GEMM) or per GB moved (a copy, a collective); per op where neither is known."""
    joules = avg_power_w * seconds_per_op
    if flops:
        return {"joules_per": joules / (flops / 1e12), "per": "TFLOP"}
    if nbytes:
        return {"joules_per": joules / (nbytes / 1e9), "per": "GB"}
    return {"joules_per": joules, "per": "op"}
