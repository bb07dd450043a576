"""Shared test set-up. TRITON_INTERPRET must be set before any kernel module is imported (DESIGN.md)."""

from __future__ import annotations

import os

if not os.environ.get("GPUPROBE_TEST_NO_INTERPRET"):
    # Without a GPU, Triton kernels can only run in the interpreter; on a GPU node the same tests then
    # still check the kernels on the CPU, and tests marked `gpu` check them compiled.
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

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
