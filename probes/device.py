"""Describe the hardware a run measured: torch's view of each device, the host, and the devices a run measures.

A figure without its context is not diagnosable: "720 TF" means one thing at 1980 MHz and another at 1650 MHz
under a power cap, and a bandwidth shortfall on a GPU whose PCIe link trained at Gen3 x8 has a cause. So the
run document records torch's device properties, NVML's view of each GPU (name, UUID, driver, memory, clocks,
memory bus width, PCIe generation and width current/max, NVLink link states, power limit, ECC, temperature,
throttle reasons) and the host (OS, Python, torch, Triton, CUDA, CPU, memory).

NVML's part (and the telemetry sampled while a case runs) is in `probes.nvml`; this module is torch's view,
the host, which devices a run measures (`resolve_devices`), and the cache and memory sizes probes plan with.

    python -m probes.device [--device cuda]    # print what gpuprobe sees, as JSON
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
from typing import Any

import torch

from analysis import specs
from probes.config import ConfigError
from probes.nvml import NA, Nvml, nvml_device_info
from probes.slurm import job_facts

MIN_TORCH = (2, 5)  # 2.4's _scaled_mm returns (out, amax) and its SDPA has no enable_gqa


def torch_version(version: str | None = None) -> tuple[int, int] | None:
    """(major, minor) of a torch version string ('2.9.0+cu128' -> (2, 9)); None for an unusual local build."""
    parts = (version or torch.__version__).split("+")[0].split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return None


def torch_version_problem(version: str | None = None) -> str | None:
    """Why this torch is too old for gpuprobe (a ConfigError's text), or None when it will do."""
    version = version or torch.__version__
    found = torch_version(version)
    if found is None or found >= MIN_TORCH:  # an unusual local build: let it run
        return None
    return (
        f"torch {version} is too old: gpuprobe needs torch>={MIN_TORCH[0]}.{MIN_TORCH[1]} "
        "(torch 2.4's _scaled_mm returns a tuple and its scaled_dot_product_attention has no enable_gqa)"
    )


def device_context(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Make `device` the current one: Triton launches on the current device, events and side streams belong
    to it. Every launch, trial and timing window of a device runs inside this (a no-op on the CPU)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def resolve_devices(spec: str | None) -> tuple[list[torch.device], str]:
    """'auto' (GPUs if any, else the CPU), 'cpu', 'cuda' (every visible GPU) or 'cuda:N'.

    Returns the devices and a note for the user (e.g. that no GPU was found). Bad input is a ConfigError.
    """
    problem = torch_version_problem()
    if problem:
        raise ConfigError(problem)
    spec = (spec or "auto").strip().lower()
    n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if spec == "auto":
        if n_gpu:
            return [torch.device("cuda", i) for i in range(n_gpu)], f"using {n_gpu} GPU(s)"
        return [torch.device("cpu")], "no GPU found: measuring the CPU (figures are CPU figures)"
    if spec == "cpu":
        return [torch.device("cpu")], "measuring the CPU (figures are CPU figures)"
    if spec == "cuda" or spec.startswith("cuda:"):
        if not n_gpu:
            raise ConfigError(f"--device {spec}: no CUDA/ROCm device is visible to torch (use --device cpu)")
        if spec == "cuda":
            return [torch.device("cuda", i) for i in range(n_gpu)], f"using {n_gpu} GPU(s)"
        idx = spec.split(":", 1)[1]
        if not idx.isdigit() or int(idx) >= n_gpu:
            raise ConfigError(f"--device {spec}: no such device (visible: cuda:0..cuda:{n_gpu - 1})")
        return [torch.device("cuda", int(idx))], f"using {spec}"
    raise ConfigError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N")


def free_memory_bytes(device: torch.device) -> int:
    """Memory a probe may still allocate on `device` (the host's available memory for the CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def triton_unavailable_reason(device: torch.device) -> str | None:
    """Why the Triton variants cannot be timed on `device`, or None when they can."""
    if device.type != "cuda":
        return "Triton kernels are timed on GPUs only; on the CPU the Triton interpreter checks correctness and is far too slow to time"
    try:
        import kernels.stream  # noqa: F401
    except Exception as exc:
        return f"Triton is not importable: {type(exc).__name__}: {exc}"
    return None


def torch_device_info(device: torch.device) -> dict[str, Any]:
    """torch's view of one device; for the CPU, the host's CPU."""
    if device.type == "cuda":
        # The properties need no CUDA context; cudaMemGetInfo would make one (~0.5 GB) on every GPU in the
        # parent process before its per-GPU workers and NCCL ranks start, and under EXCLUSIVE_PROCESS compute
        # mode every child would then fail. Free memory comes from NVML (describe_devices) or the workers.
        p = torch.cuda.get_device_properties(device)
        return {
            "torch_device": str(device),
            "kind": "gpu",
            "name": p.name,
            "uuid": str(getattr(p, "uuid", NA)),
            "compute_capability": f"{p.major}.{p.minor}",
            "gcn_arch": getattr(p, "gcnArchName", NA) if torch.version.hip else NA,
            "sm_count": p.multi_processor_count,
            "memory_total_bytes": int(p.total_memory),
            "memory_free_bytes": NA,
            "l2_cache_bytes": int(getattr(p, "L2_cache_size", 0)) or NA,
        }
    return {
        "torch_device": str(device),
        "kind": "cpu",
        "name": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_total_bytes": host_memory_bytes(),
        "l2_cache_bytes": NA,
        "last_level_cache_bytes": cpu_last_level_cache_bytes(),
    }


def describe_devices(devices: list[torch.device], nvml: Nvml) -> list[dict[str, Any]]:
    out = []
    for d in devices:
        info = torch_device_info(d)
        if d.type == "cuda":
            info["nvml"] = nvml_device_info(nvml, nvml.handle(d)) if nvml.available else nvml.reason or NA
            if isinstance(info["nvml"], dict):
                info["memory_free_bytes"] = info["nvml"].get("memory_free_bytes", NA)
        out.append(info)
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or NA


def host_memory_bytes() -> int | str:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return NA


def describe_host(nvml: Nvml) -> dict[str, Any]:
    try:
        import triton

        triton_version = triton.__version__
    except Exception as exc:  # no wheel for this platform, or a broken install
        triton_version = f"{NA} ({type(exc).__name__})"
    return {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda or NA,
        "hip": getattr(torch.version, "hip", None) or NA,
        "driver": nvml.call("nvmlSystemGetDriverVersion"),
        "nvml": "available" if nvml.available else nvml.reason,
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_total_bytes": host_memory_bytes(),
        "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "slurm": job_facts(),  # the job, node and task of a run under Slurm; None outside it
    }


def cache_bytes(device: torch.device) -> int:
    """Size of the last-level cache in front of `device`'s memory: GPU L2 (or Infinity Cache), CPU L3."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        l2 = int(props.L2_cache_size)
        arch = str(getattr(props, "gcnArchName", "")).split(":")[0]
        # AMD's Infinity Cache sits in front of HBM and is not in L2_cache_size (the spec database knows it)
        return max(l2, specs.memory_side_cache_bytes(arch)) if torch.version.hip else l2
    return cpu_last_level_cache_bytes()


def cpu_last_level_cache_bytes(default: int | None = None) -> int:
    """Largest CPU cache from sysfs (Linux); `default` where the kernel does not say."""
    import glob

    best = 0
    for d in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        try:
            with open(f"{d}/size") as fh:
                text = fh.read().strip()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text[:-1] if text[-1:] in "KMG" else text
        if digits.isdigit():
            best = max(best, int(digits) * mult)
    return best or default or specs.defaults()["cpu_last_level_cache_mib"] << 20


def main(argv: list[str] | None = None) -> int:
    import json

    from analysis.cli import ArgumentParser, guard, word

    ap = ArgumentParser(prog="python -m probes.device", description="Print what gpuprobe sees.")
    ap.add_argument("--device", default="auto", type=word)
    args = ap.parse_args(argv)

    def show() -> int:
        devices, _note = resolve_devices(args.device)
        nvml = Nvml()
        facts = {"host": describe_host(nvml), "devices": describe_devices(devices, nvml)}
        print(json.dumps(facts, indent=2, default=str))
        return 0

    return guard(show)


if __name__ == "__main__":
    raise SystemExit(main())
