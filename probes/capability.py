"""Which dtype a device can run, and which shapes a dtype's kernel takes: the capability rules of the matmul, decode
and health probes in words. Which architecture runs which dtype is a hardware fact of the spec database
(analysis/data/gpus.toml [capability]); the torch-build and kernel-shape rules are upstream's (cited where used).
"""

from __future__ import annotations

import torch

from analysis import specs
from analysis.headline import dtype_family
from probes import blockscaled, quant
from probes.sections import MATMUL_DTYPES

# How a reason names a dtype's units and the first generation that has them (the rules are in the spec DB).
_UNITS = {"tf32": "TF32 needs", "bf16": "bf16 needs", "fp8": "FP8 needs", "int8": "INT8 tensor cores need"}
_UNITS.update({f: f"{f.upper()} (block-scaled) needs" for f in blockscaled.FORMATS})
_CUDA_GENERATIONS = {"tf32": "Ampere", "bf16": "Ampere", "fp8": "Ada, Hopper, Blackwell", "int8": "Turing"}
_CUDA_GENERATIONS.update({f: "Blackwell" for f in blockscaled.FORMATS})
_ROCM_GENERATIONS = {"bf16": "MI200", "fp8": "MI300", "mxfp8": "MI350", "mxfp4": "MI350"}


def capability_reason(
    key: str,
    platform: str,
    cc: tuple[int, int] | None = None,
    arch: str = "",
    has_fp8: bool = True,
    has_scaled_mm: bool = True,
    has_int_mm: bool = True,
) -> str | None:
    """Why `key` cannot run on this device (None when it can).

    platform is "cpu", "cuda" (NVIDIA, with compute capability `cc`) or "rocm" (AMD, with gfx `arch`). Which
    architectures run which dtype is a hardware fact of the spec database (analysis/data/gpus.toml).
    """
    if key not in MATMUL_DTYPES:
        raise ValueError(f"unknown matmul dtype {key!r}")
    fam = dtype_family(key)
    if fam in blockscaled.FORMATS:
        if platform == "cpu":
            return (
                f"{fam.upper()} is a block-scaled tensor-core format (Blackwell sm_100+, MI350 for MX); "
                "on the CPU its packing, scales and dequantization are tested, the GEMM is not timed"
            )
        if not _has_block_scaled_mm():
            return "this torch build has no torch.nn.functional.scaled_mm with block scaling (torch 2.10+)"
        if platform == "rocm" and not specs.rocm_archs(fam):
            return f"{fam.upper()} is NVIDIA's format: no AMD architecture runs it"
    if fam.startswith("fp8") and (not has_fp8 or not has_scaled_mm):
        return "this torch build has no float8 dtypes or torch._scaled_mm"
    if fam == "int8" and not has_int_mm:
        return "this torch build has no torch._int_mm"
    if fam in quant.WEIGHT_ONLY:
        op = "_weight_int8pack_mm" if fam == "int8-wo" else "_weight_int4pack_mm"
        if not hasattr(torch, op):
            return f"this torch build has no torch.{op}"
        if fam == "int4-wo" and platform == "cuda" and not (cc and cc >= (8, 0)):
            return "torch._weight_int4pack_mm (tinygemm) needs sm_80 or newer"
        if (
            fam == "int4-wo"
            and platform == "cpu"
            and not hasattr(torch, "_convert_weight_to_int4pack_for_cpu")
        ):
            return (
                "int4 weight packing for the CPU (torch._convert_weight_to_int4pack_for_cpu) needs torch 2.6"
            )
        return quant.kernel_reason(fam, platform)
    if fam == "tf32":
        if platform == "rocm":
            return (
                "TF32 through torch.backends.cuda.matmul.allow_tf32 is an NVIDIA mode; not measured on ROCm"
            )
        if platform == "cpu":
            return "TF32 is a GPU tensor-core mode; the CPU has none"
    if platform == "cuda":
        need = specs.cuda_min_capability(fam)
        if need is not None and not (cc and cc >= need):
            sm = f"sm_{cc[0]}{cc[1]}" if cc else "unknown"
            return f"{_UNITS[fam]} sm_{need[0]}{need[1]} or newer ({_CUDA_GENERATIONS[fam]}); this device is {sm}"
    if platform == "rocm":
        archs = specs.rocm_archs(fam)
        if archs is not None and not arch.startswith(archs):
            first = f"{_ROCM_GENERATIONS.get(fam, '')} ({archs[0]})".strip()
            return f"{_UNITS[fam]} {first} or newer; this device is {arch or 'unknown'}"
    return None


def _has_block_scaled_mm() -> bool:
    import torch.nn.functional as F

    return all(hasattr(torch, d) for d in ("float8_e8m0fnu", "float4_e2m1fn_x2")) and hasattr(F, "scaled_mm")


def shape_reason(key: str, m: int, n: int, k: int, platform: str, group_size: int = 128) -> str | None:
    """Why a shape cannot run in `key` on this platform although the dtype can (None when it can).

    torch._int_mm on GPUs (cuBLASLt / hipBLASLt, aten/src/ATen/native/cuda/Blas.cpp) checks M > 16 and K, N
    multiples of 8: int8 decode GEMMs at M <= 16 are skipped with that reason rather than recorded as errors.
    """
    if key in quant.WEIGHT_ONLY:
        return quant.shape_reason(key, n, k, group_size, platform)
    if key in blockscaled.FORMATS:
        return blockscaled.check_shape(key, m, n, k)
    if dtype_family(key) == "int8" and platform in ("cuda", "rocm"):
        if m <= 16:
            return f"torch._int_mm on GPUs needs M > 16 (M = {m})"
        if k % 8 or n % 8:
            return f"torch._int_mm on GPUs needs K and N to be multiples of 8 (K = {k}, N = {n})"
    return None


def platform_of(device: torch.device) -> tuple[str, tuple[int, int] | None, str]:
    if device.type != "cuda":
        return "cpu", None, ""
    props = torch.cuda.get_device_properties(device)
    if torch.version.hip:
        return "rocm", None, str(getattr(props, "gcnArchName", ""))
    return "cuda", (props.major, props.minor), ""


def device_reason(key: str, device: torch.device) -> str | None:
    platform, cc, arch = platform_of(device)
    return capability_reason(
        key,
        platform,
        cc,
        arch,
        has_fp8=hasattr(torch, "float8_e4m3fn"),
        has_scaled_mm=hasattr(torch, "_scaled_mm"),
        has_int_mm=hasattr(torch, "_int_mm"),
    )
