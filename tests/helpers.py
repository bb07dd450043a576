"""Shared test helpers (not in conftest.py: tests/benchmarks has a conftest of its own, and the name clashes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA/ROCm GPU")


def fast_timing_toml(case_budget_s: float) -> str:
    """A bench.toml [timing] table for tests: no warm-up, a handful of repetitions, a short budget."""
    return f"""
[timing]
warmup_s = 0.0
min_reps = 3
max_reps = 10
target_rse = 0.5
case_budget_s = {case_budget_s}
"""
