"""The checker: is a kernel's output right? Poison first, compare with a higher-precision reference.

Outputs are filled with NaN (or a sentinel for integers) before the kernel runs, so a kernel that writes
nothing, or skips a tail, cannot pass on what a previous run left behind. Expected values are computed in
float64, chunk by chunk so that checking a multi-GB array does not double the memory it needs. A mismatch
is described in a few readable lines (count, tolerance, first offending indices with got / expected).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# (rtol, atol) for an elementwise result against a float64 reference: a few units in the last place of
# the output dtype, since one rounding of an fp32-computed value is the most a correct kernel may add.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-12, 0.0),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (2e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-4),
}

Expected = torch.Tensor | Callable[[int, int], torch.Tensor]


def poison(t: torch.Tensor) -> None:
    """Fill `t` with a value no correct kernel writes: NaN for floats, the dtype's minimum for integers."""
    if t.is_floating_point():
        t.fill_(float("nan"))
    else:
        t.fill_(torch.iinfo(t.dtype).min)


def compare(
    actual: torch.Tensor,
    expected: Expected,
    *,
    rtol: float,
    atol: float,
    name: str = "output",
    chunk_elems: int = 1 << 20,
    max_lines: int = 3,
) -> str | None:
    """None when |actual - expected| <= atol + rtol * |expected| everywhere (NaN never passes), else a report.

    `expected` is a tensor or a function (lo, hi) -> float64 values of the flattened range [lo, hi).
    """
    if rtol == 0 and atol == 0 and isinstance(expected, torch.Tensor) and _exactly_equal(actual, expected):
        return None  # copies: one comparison in the native dtype instead of float64 chunks
    flat = actual.reshape(-1)
    n = flat.numel()
    if isinstance(expected, torch.Tensor):
        if expected.numel() != n:
            return f"{name}: {n} elements, expected {expected.numel()} (shape {tuple(actual.shape)} vs {tuple(expected.shape)})"
        exp_flat = expected.reshape(-1)

        def expected_fn(lo: int, hi: int) -> torch.Tensor:
            return exp_flat[lo:hi]

    else:
        expected_fn = expected
    bad_total = 0
    examples: list[str] = []
    for lo in range(0, n, chunk_elems):
        hi = min(n, lo + chunk_elems)
        a = flat[lo:hi].to(torch.float64)
        e = expected_fn(lo, hi).to(device=a.device, dtype=torch.float64)
        ok = (a - e).abs() <= atol + rtol * e.abs()  # NaN compares False, so a poisoned slot fails
        nbad = int((~ok).sum())
        if nbad:
            bad_total += nbad
            if len(examples) < max_lines:
                idx = torch.nonzero(~ok).flatten()[: max_lines - len(examples)]
                for i in idx.tolist():
                    examples.append(f"[{lo + i}] got {a[i].item():.7g} expected {e[i].item():.7g}")
    if not bad_total:
        return None
    return (
        f"{name}: {bad_total} of {n} elements differ (tolerance {atol:g} + {rtol:g}*|expected|); "
        + "; ".join(examples)
    )


def _exactly_equal(a: torch.Tensor, e: torch.Tensor) -> bool:
    if a.shape != e.shape or a.dtype != e.dtype or a.device != e.device:
        return False
    return bool(torch.equal(a, e))  # NaN != NaN: a poisoned slot still fails


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    return TOLERANCES.get(dtype, (1e-3, 1e-5))
