"""Workloads for `python -m probes.profile`: our own STREAM copy kernel, and torch's copy for comparison.

    python -m probes.profile examples.profile_kernels:triton_copy --device cuda
    python -m probes.profile examples.profile_kernels:torch_copy --device cpu --run results/RUN.json

Each factory takes the torch.device and returns a Workload: the callable to time and the bytes it moves.
GPROBE_PROFILE_BYTES sets the working set (both arrays); by default 2 GiB on a GPU, 256 MiB on a CPU.
"""

from __future__ import annotations

import os

import torch

from probes.profile import Workload


def _arrays(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    default = (2 << 30) if device.type == "cuda" else (256 << 20)
    n = int(os.environ.get("GPROBE_PROFILE_BYTES", default)) // 8
    src = torch.empty(n, device=device).uniform_(0.5, 1.5)
    return src, torch.empty_like(src)


def torch_copy(device: torch.device) -> Workload:
    src, dst = _arrays(device)
    return Workload(lambda: dst.copy_(src), nbytes=2 * src.nbytes, name="torch copy_")


def triton_copy(device: torch.device) -> Workload:
    from kernels.stream import triton_copy as copy

    src, dst = _arrays(device)
    return Workload(lambda: copy(src, dst), nbytes=2 * src.nbytes, name="kernels.stream.triton_copy")
