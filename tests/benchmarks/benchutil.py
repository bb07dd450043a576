"""Helpers of the benchmark cases (a module of its own: `conftest` is a name two folders share)."""

from __future__ import annotations

import torch


def device_name(device: torch.device) -> str:
    from probes.device import cpu_model

    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def record(benchmark, device: torch.device, *, work: float, unit: str, **info) -> None:
    """extra_info for the saved JSON: device, dtype, shape, and the figure (GB/s or TFLOPS) from the median."""
    benchmark.extra_info.update(device=device_name(device), torch_device=str(device), **info)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        median = stats.stats.median
        scale = 1e9 if unit == "GB/s" else 1e12
        benchmark.extra_info[unit] = work / median / scale
