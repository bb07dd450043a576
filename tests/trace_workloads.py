"""Factories for tests/test_trace.py: `python -m probes.profile --trace trace_workloads:NAME` calls NAME(device)."""

from __future__ import annotations

import torch


def mlp(device: torch.device):
    """The issue's two-layer MLP step: Linear(1024, 4096), GELU, Linear(4096, 1024) on a 64 x 1024 input."""
    m = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.GELU(), torch.nn.Linear(4096, 1024)).to(
        device
    )
    x = torch.randn(64, 1024, device=device)

    @torch.no_grad()
    def run():
        return m(x)

    return run


def decoder(device: torch.device):
    """One decode step of the project's own decoder (qwen2.5-0.5b, 2 layers, batch 4, 64 cached positions)."""
    from analysis.models import load_model
    from probes.decoder import build, step

    cfg = load_model("qwen2.5-0.5b")
    model = build(cfg, 2, 4, 65, "fp32", device)
    tokens = torch.randint(0, cfg.vocab, (4,), device=device)
    return lambda: step(model.batch(4), tokens, 64)


def raises(device: torch.device):
    raise RuntimeError("the model file is missing")


def nothing(device: torch.device):
    return lambda: None


def not_callable(device: torch.device):
    return 42


def triton_copy(device: torch.device):
    from kernels.stream import triton_copy as copy

    src = torch.randn(1 << 20, device=device)
    dst = torch.empty_like(src)
    return lambda: copy(src, dst, 4096)


def cublas_gemm(device: torch.device):
    a = torch.randn(2048, 2048, device=device, dtype=torch.bfloat16)
    return lambda: a @ a
