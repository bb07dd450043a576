"""Hardware description: the CPU, the device command, and (on a GPU) torch and NVML fields."""

from __future__ import annotations

import pytest
import torch
from helpers import requires_cuda

from probes import device as dev
from probes.device import describe_devices
from probes.nvml import NA, Nvml


def test_cpu_description():
    (d,) = describe_devices([torch.device("cpu")], Nvml())
    assert d["kind"] == "cpu" and d["cores"] >= 1
    assert d["last_level_cache_bytes"] > 0
    assert isinstance(d["memory_total_bytes"], int)
    assert "nvml" not in d


def test_device_cli_prints_json(capsys):
    import json

    assert dev.main(["--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["devices"][0]["kind"] == "cpu"


def test_describing_a_gpu_makes_no_cuda_context(monkeypatch):
    """The parent describes every GPU before its per-GPU workers start: cudaMemGetInfo would put a CUDA context
    (~0.5 GB) on each, and under EXCLUSIVE_PROCESS compute mode every worker would then fail."""
    import types

    props = types.SimpleNamespace(
        name="NVIDIA H100 80GB HBM3",
        uuid="GPU-x",
        major=9,
        minor=0,
        multi_processor_count=132,
        total_memory=85_000_000_000,
        L2_cache_size=52_428_800,
    )

    def no_context(*_a, **_k):
        raise AssertionError("mem_get_info creates a CUDA context in the parent")

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: props)
    monkeypatch.setattr(torch.cuda, "mem_get_info", no_context)
    d = dev.torch_device_info(torch.device("cuda", 0))
    assert d["memory_total_bytes"] == 85_000_000_000 and d["memory_free_bytes"] == NA and d["sm_count"] == 132


@requires_cuda
def test_gpu_description_has_torch_and_nvml_fields():
    nv = Nvml()
    (d,) = describe_devices([torch.device("cuda", 0)], nv)
    assert d["kind"] == "gpu" and d["sm_count"] > 0 and d["memory_total_bytes"] > 0
    if nv.available:
        assert d["nvml"]["name"] != NA
        assert isinstance(d["nvml"]["memory_bus_width_bits"], int) or d["nvml"]["memory_bus_width_bits"] == NA


@pytest.mark.parametrize(
    ("version", "too_old"),
    [("2.4.1+cu121", True), ("2.4.0", True), ("1.13.1", True), ("2.5.0", False), ("2.13.0+cpu", False)],
)
def test_torch_older_than_2_5_is_refused_with_the_reason(version, too_old):
    problem = dev.torch_version_problem(version)
    assert (problem is not None) == too_old
    if too_old:
        assert "needs torch>=2.5" in problem and "_scaled_mm" in problem


def test_an_old_torch_stops_probes_all_with_exit_2(monkeypatch, capsys, tmp_path):
    from probes.all import main as all_main

    monkeypatch.setattr(torch, "__version__", "2.4.1+cu121")
    assert all_main(["--device", "cpu", "--out", str(tmp_path)]) == 2
    assert "torch 2.4.1+cu121 is too old" in capsys.readouterr().err
