"""Every shipped Triton kernel compiled ahead of time for every architecture of the spec database, on this CPU.

tests/aot_compile.py compiles the matrix (STREAM kernels; the matmul kernel x the probe's Triton dtypes x every
autotune configuration; x sm_80, sm_86, sm_89, sm_90, sm_100, gfx90a, gfx942) in worker processes, outside the
interpreter; its output is cached by the kernels' source and Triton's version, so the matrix compiles once per
change. Checked here: a dtype compiles exactly where the capability rules let the probe run it; the tensor-core
instruction is the architecture's (mma.sync on sm_80/86/89, wgmma on sm_90, tcgen05 on sm_100, mfma on gfx9);
every configuration's shared memory is known against the architecture's per-block limit (the autotuner drops
those over it, so at least the smaller configurations must fit); the STREAM kernels issue 128-bit global loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import triton

from analysis import specs
from probes.gemm import capability_reason

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("aot_compile.py")
SPEC_ARCH = {"gfx90a": "cdna2", "gfx942": "cdna3"}  # the spec database's key of each AMD target
CUDA_CC = {"sm80": (8, 0), "sm86": (8, 6), "sm89": (8, 9), "sm90": (9, 0), "sm100": (10, 0)}

pytestmark = pytest.mark.slow


def _cache_key() -> str:
    h = hashlib.sha256(triton.__version__.encode())
    for p in (SCRIPT, *sorted((REPO / "kernels").glob("*.py"))):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def results() -> list[dict]:
    cache = (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "gpuprobe-aot"
        / f"{_cache_key()}.jsonl"
    )
    if not cache.exists():
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        r = subprocess.run(
            [sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=900, cwd=REPO
        )
        assert r.returncode == 0, r.stderr[-3000:]
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(r.stdout)
        os.replace(tmp, cache)
    return [json.loads(line) for line in cache.read_text().splitlines() if line.strip()]


def _platform(arch: str) -> tuple[str, tuple[int, int] | None, str]:
    return ("rocm", None, arch) if arch.startswith("gfx") else ("cuda", CUDA_CC[arch], "")


def test_the_matrix_is_whole(results):
    archs = {r["arch"] for r in results}
    assert archs == {"sm80", "sm86", "sm89", "sm90", "sm100", "gfx90a", "gfx942"}
    kinds = {(r["kernel"], r["dtype"]) for r in results}
    assert kinds >= {("matmul", "bf16"), ("matmul", "fp16"), ("matmul", "fp8_e4m3"), ("copy", "fp32")}


def test_each_dtype_compiles_where_the_probe_runs_it_and_only_there(results):
    for r in (r for r in results if r["kernel"] == "matmul"):
        platform, cc, arch = _platform(r["arch"])
        runs = capability_reason(r["dtype"], platform, cc=cc, arch=arch) is None
        where = f"{r['dtype']} config {r['config']} on {r['arch']}"
        if runs:
            assert "error" not in r, f"{where}: the probe runs it, but it does not compile: {r['error']}"
        elif (
            platform == "cuda"
        ):  # the probe skips it with a reason; NVIDIA's compiler agrees (fp8 before sm_89)
            assert "error" in r, f"{where}: the probe skips it, yet it compiles"
        # (on gfx90a Triton upcasts fp8 to fp16 for an MFMA that has no fp8: it compiles, but is not fp8; the
        # probe skips it, as MI200 has no fp8 rate to measure)


def test_the_tensor_core_instruction_is_the_architectures(results):
    expected = {
        "sm80": "mma.sync",
        "sm86": "mma.sync",
        "sm89": "mma.sync",
        "sm90": "wgmma",
        "sm100": "tcgen05",
    }
    for r in (r for r in results if r["kernel"] == "matmul" and "error" not in r):
        platform, cc, arch = _platform(r["arch"])
        if capability_reason(r["dtype"], platform, cc=cc, arch=arch) is not None:
            continue  # not a dtype the probe runs there (fp8 on MI200 compiles to plain FMAs)
        want = "mfma" if r["arch"].startswith("gfx") else expected[r["arch"]]
        # Hopper's wgmma and Blackwell's tcgen05 need 64-row tiles or more: a smaller tile keeps mma.sync
        small = r["arch"] in ("sm90", "sm100") and r["kwargs"]["BLOCK_M"] < 64
        assert r["tensor_op"] == ("mma.sync" if small else want), (
            f"{r['dtype']} config {r['config']} {r['kwargs']} on {r['arch']}: {r['tensor_op']}, expected {want}"
        )


def test_shared_memory_against_each_architectures_per_block_limit(results):
    for arch in {r["arch"] for r in results}:
        limit = specs.shared_memory_per_block_bytes(SPEC_ARCH.get(arch, arch))
        assert limit, f"{arch}: the spec database has no shared-memory limit"
        for dtype in ("fp16", "bf16", "fp8_e4m3"):
            ok = [r for r in results if r["kernel"] == "matmul" and r["arch"] == arch and r["dtype"] == dtype]
            compiled = [r for r in ok if "error" not in r]
            if not compiled:
                continue
            fits = [r for r in compiled if r["shared_bytes"] <= limit]
            # the autotuner drops a configuration over the limit (OutOfResources); most must fit
            assert len(fits) >= len(compiled) // 2, (
                arch,
                dtype,
                [(r["config"], r["shared_bytes"]) for r in compiled],
            )


def test_stream_kernels_issue_128_bit_loads(results):
    for r in (r for r in results if r["kernel"] in ("read", "copy", "triad")):
        assert "error" not in r, r
        assert r["vector_loads"], f"{r['kernel']} on {r['arch']}: no 128-bit global loads"


def test_the_pointer_chase_compiles_everywhere_to_dependent_global_loads(results):
    """kernels/chase.py on every architecture: it compiles, and the chase is global loads (no local copy)."""
    chases = [r for r in results if r["kernel"] == "chase"]
    assert {r["arch"] for r in chases} == {"sm80", "sm86", "sm89", "sm90", "sm100", "gfx90a", "gfx942"}
    for r in chases:
        assert "error" not in r, r
        assert r["global_loads"], f"chase on {r['arch']}: no global load in the loop"
