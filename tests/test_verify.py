"""The checker: poisoning, tolerances, readable mismatch reports."""

from __future__ import annotations

import torch

from probes.verify import compare, poison, tolerance


def test_poison_floats_with_nan_and_ints_with_the_minimum():
    f = torch.zeros(4)
    poison(f)
    assert torch.isnan(f).all()
    i = torch.zeros(4, dtype=torch.uint8)
    i.fill_(7)
    poison(i)
    assert (i == 0).all()


def test_compare_accepts_values_within_tolerance_and_rejects_beyond():
    e = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    assert compare(e.float() * (1 + 5e-6), e, rtol=1e-5, atol=0.0) is None
    msg = compare(e.float() * (1 + 5e-5), e, rtol=1e-5, atol=0.0)
    assert msg is not None and "3 of 3 elements differ" in msg


def test_compare_never_passes_nan_and_names_the_first_bad_indices():
    a = torch.arange(10, dtype=torch.float32)
    a[7] = float("nan")
    a[9] = 100.0
    msg = compare(a, torch.arange(10, dtype=torch.float64), rtol=0, atol=0, name="copy")
    assert msg.startswith("copy: 2 of 10 elements differ")
    assert "[7] got nan expected 7" in msg
    assert "[9] got 100 expected 9" in msg


def test_compare_with_a_chunked_reference_function_and_shape_mismatch():
    a = torch.arange(1000, dtype=torch.float32)
    calls = []

    def expected(lo: int, hi: int) -> torch.Tensor:
        calls.append((lo, hi))
        return torch.arange(lo, hi, dtype=torch.float64)

    assert compare(a, expected, rtol=0, atol=0, chunk_elems=300) is None
    assert calls == [(0, 300), (300, 600), (600, 900), (900, 1000)]
    a[950] = -1
    assert "[950] got -1" in compare(a, expected, rtol=0, atol=0, chunk_elems=300)
    assert "expected 5" in compare(a, torch.zeros(5), rtol=0, atol=0)


def test_tolerances_are_looser_for_narrower_dtypes():
    assert tolerance(torch.float32)[0] < tolerance(torch.float16)[0] < tolerance(torch.bfloat16)[0]


def test_exact_fast_path_still_rejects_nan_and_differences():
    src = torch.rand(1000)
    dst = src.clone()
    assert compare(dst, src, rtol=0, atol=0) is None
    dst[500] = float("nan")
    assert "[500] got nan" in compare(dst, src, rtol=0, atol=0)
    dst = src.clone()
    dst[3] += 1
    assert "1 of 1000 elements differ" in compare(dst, src, rtol=0, atol=0)
