"""Shared test helpers (not in conftest.py: tests/benchmarks has a conftest of its own, and the name clashes)."""

from __future__ import annotations

import contextlib
import dataclasses
import types
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import torch

from analysis.rundoc import Measurement, headline_summary, new_document
from probes.config import TimingConfig, load_config

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


def make_doc() -> dict:
    doc = new_document(
        tool={"name": "gpuprobe", "version": "0"},
        host={"hostname": "h"},
        devices=[{"torch_device": "cpu"}],
        config={"profile": "quick"},
        started=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
    )
    timing = {"stats": {"cv": 0.01, "median_s": 1.0}, "samples_s": [1.0, float("inf")]}
    for v in (10.0, 30.0, 20.0):
        doc["measurements"].append(
            Measurement(
                "bandwidth",
                f"copy/{v}",
                "cpu",
                {"pattern": "copy", "variant": "torch", "working_set_bytes": int(v) << 20},
                value=v,
                unit="bytes_per_s",
                timing=timing,
                headline="dram_copy_torch",
            ).to_dict()
        )
    doc["measurements"].append(
        Measurement("bandwidth", "x", "cpu", {}, status="skipped", error="why").to_dict()
    )
    doc["summary"] = headline_summary(doc["measurements"])
    return doc


def h100_doc(name: str = "NVIDIA H100 80GB HBM3") -> dict:
    doc = make_doc()
    doc["devices"] = [
        {
            "torch_device": "cuda:0",
            "name": name,
            "kind": "gpu",
            "sm_count": 132,
            "memory_total_bytes": 80e9,
            "nvml": {"memory_bus_width_bits": 5120, "memory_clock_max_mhz": 2619},
        }
    ]

    def row(n, v, unit, probe):
        return {
            "probe": probe,
            "name": n,
            "device": "cuda:0",
            "value": v,
            "unit": unit,
            "min": v,
            "max": v,
            "n_cases": 1,
            "max_cv": 0.01,
        }

    doc["summary"] = [
        row("dram_copy_torch", 3.0e12, "bytes_per_s", "bandwidth"),
        row("matmul_peak_bf16_torch", 650e12, "flop_per_s", "matmul"),
        row("matmul_peak_fp8_e4m3_torch", 700e12, "flop_per_s", "matmul"),
        row("all_reduce_busbw_bf16", 360e9, "bytes_per_s", "collectives"),
    ]
    n = k = 4096
    flops, nbytes = 2 * n * k, n * k * 2 + 2 * k + 2 * n
    doc["measurements"] = [
        {
            "probe": "matmul",
            "case": "square/bf16/torch/8192",
            "device": "cuda:0",
            "status": "ok",
            "value": 650e12,
            "unit": "flop_per_s",
            "params": {
                "kind": "square",
                "dtype": "bf16",
                "variant": "torch",
                "m": 8192,
                "n": 8192,
                "k": 8192,
                "flops": 2 * 8192**3,
                "bytes_moved": 3 * 8192 * 8192 * 2,
            },
            "timing": {"stats": {"median_s": 2 * 8192**3 / 650e12}},
            "headline": "matmul_peak_bf16_torch",
            "telemetry": {
                "available": True,
                "sm_clock_mhz": {"min": 1600, "median": 1650, "max": 1700},
                "throttle_reasons": ["sw_power_cap"],
            },
        },
        {
            "probe": "matmul",
            "case": "decode/x/o/bf16/M=1",
            "device": "cuda:0",
            "status": "ok",
            "value": flops / (2 * nbytes / 3.0e12),
            "unit": "flop_per_s",
            "params": {
                "kind": "decode",
                "dtype": "bf16",
                "variant": "torch",
                "m": 1,
                "n": n,
                "k": k,
                "flops": flops,
                "bytes_moved": nbytes,
            },
            "timing": {"stats": {"median_s": 2 * nbytes / 3.0e12}},
            "headline": None,
        },
    ]
    doc["host"] = {"hostname": "h", "cuda_devices": 8}
    doc["measurements"].append(
        {
            "probe": "collectives",
            "case": "all_reduce/bf16/1 GiB",
            "device": "cuda:0",
            "status": "ok",
            "value": 360e9,
            "unit": "bytes_per_s",
            "params": {
                "op": "all_reduce",
                "dtype": "bf16",
                "world_size": 8,
                "link": "NVLink 4",
                "size_bytes": 1 << 30,
                "time_s": (1 << 30) / 360e9 * 2 * 7 / 8,
                "algbw_bytes_per_s": 360e9 * 8 / 14,
                "busbw_bytes_per_s": 360e9,
            },
            "headline": "all_reduce_busbw_bf16",
        }
    )
    return doc


def timing_config(**overrides: float) -> TimingConfig:
    """The shipped [timing] section with some fields replaced (tests that time one function directly)."""
    return dataclasses.replace(load_config(REPO / "bench.toml").timing, **overrides)


TINY_PROBES_TOML = (
    fast_timing_toml(0.05)
    + """
[bandwidth]
working_set_cache_multiples = [0.01, 0.03]
dram_min_cache_multiple = 0.02
[hostlink]
sizes_bytes = [65536, 1048576]
[profiles.tiny]
probes = ["bandwidth", "hostlink"]
"""
)


def tiny_ctx(path: Path, device: str = "cpu") -> Any:
    """A probe Context for a bench.toml path on one device, with a real (possibly absent) NVML."""
    from probes.context import Context
    from probes.nvml import Nvml

    return Context(cfg=load_config(path), devices=[torch.device(device)], nvml=Nvml())


def fake_pynvml(init_error: bool) -> types.ModuleType:
    """A pynvml whose init works (or not) and whose every query raises NVMLError (not supported)."""
    m = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def raiser(*a, **k):
        raise NVMLError("Not Supported")

    m.NVMLError = NVMLError
    m.nvmlInit = raiser if init_error else (lambda: None)
    m.nvmlShutdown = lambda: None
    m.__getattr__ = lambda name: (
        raiser
        if name.startswith(("nvmlDevice", "nvmlSystem"))
        else (_ for _ in ()).throw(AttributeError(name))
    )
    return m


TINY_COLLECTIVES_TOML = (
    fast_timing_toml(0.05)
    + """
[collectives]
ops = ["all_reduce", "all_gather", "reduce_scatter", "all_to_all"]
dtypes = ["fp32", "bf16"]
min_bytes = 8
max_bytes = 32768
size_factor = 8
collective_timeout_s = 4.0
startup_timeout_s = 120.0
[profiles.t]
probes = ["collectives"]
"""
)


class RecordingDeviceContext:
    """A fake `device_context` that records which devices were made current (tests of device-context use)."""

    def __init__(self) -> None:
        self.entered: list[str] = []

    @contextlib.contextmanager
    def __call__(self, device: Any) -> Any:
        self.entered.append(str(device))
        yield


def cli(main: Any, argv: list[str]) -> int:
    """A command's exit code, whether it returns it or argparse exits with it (bad flags)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
