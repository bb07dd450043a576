"""Compile every shipped Triton kernel ahead of time for every GPU architecture the spec database names.

Triton compiles without a GPU: `triton.compile(ASTSource(...), target=GPUTarget(...))` returns the PTX or
AMDGCN and the shared memory a program uses. This script runs the whole matrix (kernel x dtype x configuration x
architecture) in worker processes and prints one JSON object per compile: what compiled, its shared memory, the
tensor-core instruction family found in the code, the width of the STREAM kernels' global loads, or the error.
It runs outside pytest's TRITON_INTERPRET (an interpreted kernel cannot be compiled): tests/test_kernels_aot.py
starts it once and caches its output by the kernels' source and Triton's version.

    python tests/aot_compile.py > aot.jsonl
"""

from __future__ import annotations

import json
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

# GPUTarget arguments per architecture key (the spec database's arch keys; AMD by gfx name)
TARGETS = {
    "sm80": ("cuda", 80, 32),
    "sm86": ("cuda", 86, 32),
    "sm89": ("cuda", 89, 32),
    "sm90": ("cuda", 90, 32),
    "sm100": ("cuda", 100, 32),
    "gfx90a": ("hip", "gfx90a", 64),
    "gfx942": ("hip", "gfx942", 64),
}
# the Triton element type of each matmul dtype the probe launches (ROCm's MI300 fp8 is the fnuz encoding)
MATMUL_TYPES = {"fp16": "fp16", "bf16": "bf16", "fp8_e4m3": "fp8e4nv"}
ROCM_FP8 = "fp8e4b8"
STREAM = ("read", "write", "copy", "triad")


def matrix() -> list[dict]:
    from kernels.matmul import _configs

    jobs = []
    for arch in TARGETS:
        for kernel in STREAM:
            jobs.append({"kernel": kernel, "dtype": "fp32", "arch": arch})
        jobs.append({"kernel": "chase", "dtype": "int64", "arch": arch})
        for dtype in MATMUL_TYPES:
            for i, cfg in enumerate(_configs("hip" if arch.startswith("gfx") else "cuda")):
                job = {"kernel": "matmul", "dtype": dtype, "arch": arch, "config": i}
                job.update(kwargs=dict(cfg.kwargs), num_warps=cfg.num_warps, num_stages=cfg.num_stages)
                jobs.append(job)
    return jobs


def _matmul_source(job: dict):
    from triton.compiler import ASTSource

    from kernels.matmul import KERNEL_META, matmul_kernel

    elem = MATMUL_TYPES[job["dtype"]]
    if elem == "fp8e4nv" and job["arch"].startswith("gfx"):
        elem = ROCM_FP8
    out = "bf16" if elem.startswith("fp8") else elem
    sig = {"a_ptr": f"*{elem}", "b_ptr": f"*{elem}", "c_ptr": f"*{out}", "sa_ptr": "*fp32", "sb_ptr": "*fp32"}
    for name in ("M", "N", "K", "stride_am", "stride_ak", "stride_bk", "stride_bn", "stride_cm", "stride_cn"):
        sig[name] = "i32"
    sig.update(stride_sa="i32", stride_sb="i32")
    consts = {k: v for k, v in job["kwargs"].items() if k in KERNEL_META} | {"FP8_FAST_ACCUM": False}
    for c in consts:
        sig[c] = "constexpr"
    # what the runtime specialises for aligned operands: pointers and sizes divisible by 16
    aligned = {(i,): [["tt.divisibility", 16]] for i in range(8)}
    return ASTSource(fn=matmul_kernel, signature=sig, constexprs=consts, attrs=aligned)


def _stream_source(job: dict):
    from triton.compiler import ASTSource

    from kernels import stream

    fn = getattr(stream, f"{job['kernel']}_kernel")
    sigs = {
        "read": {"x_ptr": "*fp32", "partial_ptr": "*fp32", "n": "i64"},
        "write": {"out_ptr": "*fp32", "value": "fp32", "n": "i64"},
        "copy": {"src_ptr": "*fp32", "dst_ptr": "*fp32", "n": "i64"},
        "triad": {"a_ptr": "*fp32", "b_ptr": "*fp32", "c_ptr": "*fp32", "scalar": "fp32", "n": "i64"},
    }
    sig = {**sigs[job["kernel"]], "BLOCK": "constexpr"}
    # the bandwidth probe's buffers: 256-byte aligned, element counts that keep vector loads whole
    aligned = {
        (i,): [["tt.divisibility", 16]]
        for i, (k, t) in enumerate(sig.items())
        if t.startswith("*") or k == "n"
    }
    return ASTSource(fn=fn, signature=sig, constexprs={"BLOCK": stream.DEFAULT_BLOCK}, attrs=aligned)


def _chase_source(job: dict):
    from triton.compiler import ASTSource

    from kernels.chase import chase_kernel

    sig = {"next_ptr": "*i64", "out_ptr": "*i64", "start": "i64", "steps": "i32"}
    return ASTSource(fn=chase_kernel, signature=sig, constexprs={}, attrs={(0,): [["tt.divisibility", 16]]})


def compile_one(job: dict) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget

    out = dict(job)
    try:
        if job["kernel"] == "matmul":
            src = _matmul_source(job)
            from kernels.matmul import KERNEL_META

            extra = {k: v for k, v in job["kwargs"].items() if k not in KERNEL_META}  # compiler options (HIP)
            options = {"num_warps": job["num_warps"], "num_stages": job["num_stages"], **extra}
        elif job["kernel"] == "chase":
            src, options = _chase_source(job), {"num_warps": 1}
        else:
            from kernels.stream import DEFAULT_BLOCK, _warps

            src = _stream_source(job)
            options = {"num_warps": _warps(DEFAULT_BLOCK)}
        k = triton.compile(src, target=GPUTarget(*TARGETS[job["arch"]]), options=options)
    except Exception as exc:  # the architecture cannot run this dtype, or the compiler refused it
        out["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        return out
    code = k.asm.get("ptx") or k.asm.get("amdgcn") or ""
    out["shared_bytes"] = int(k.metadata.shared)
    out["tensor_op"] = next((op for op in ("tcgen05", "wgmma", "mma.sync", "mfma") if op in code), None)
    loads = re.findall(r"ld\.(?:volatile\.)?global(?:\.\w+)*|global_load_dword\w*|buffer_load_dword\w*", code)
    out["vector_loads"] = any(".v4" in ld or ld.endswith("x4") for ld in loads)
    out["global_loads"] = len(loads)
    return out


def main() -> int:
    jobs = matrix()
    with ProcessPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
        for result in pool.map(compile_one, jobs, chunksize=4):
            print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
