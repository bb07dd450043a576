"""One GEMM per dtype (probes.gemm): dtype capability by device, the Triton kernel in the interpreter, the
checker (and proof it rejects wrong kernels), then GPU-only paths (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch
from helpers import requires_cuda

import probes.gemm as mm
from kernels.matmul import triton_matmul
from probes.verify import poison

CPU = torch.device("cpu")
SMALL_TILES = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 16}


@pytest.mark.parametrize(
    ("platform", "cc", "arch", "runs", "reasons"),
    [
        (
            "cuda",
            (9, 0),
            "",
            {"fp32", "tf32", "fp16", "bf16", "fp8_e4m3", "fp8_e4m3_rowwise", "fp8_e5m2", "int8"},
            {},
        ),
        ("cuda", (8, 9), "", {"fp32", "tf32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "int8"}, {}),
        (
            "cuda",
            (8, 0),
            "",
            {"fp32", "tf32", "fp16", "bf16", "int8"},
            {"fp8_e4m3": "FP8 needs sm_89 or newer (Ada, Hopper, Blackwell); this device is sm_80"},
        ),
        (
            "cuda",
            (7, 5),
            "",
            {"fp32", "fp16", "int8"},
            {"bf16": "bf16 needs sm_80", "tf32": "TF32 needs sm_80"},
        ),
        ("cuda", (7, 0), "", {"fp32", "fp16"}, {"int8": "INT8 tensor cores need sm_75"}),
        (
            "rocm",
            None,
            "gfx942:sramecc+:xnack-",
            {"fp32", "fp16", "bf16", "fp8_e4m3", "int8"},
            {"tf32": "NVIDIA mode"},
        ),
        ("rocm", None, "gfx90a", {"fp32", "fp16", "bf16", "int8"}, {"fp8_e4m3": "FP8 needs MI300 (gfx942)"}),
        (
            "cpu",
            None,
            "",
            {"fp32", "fp16", "bf16", "fp8_e4m3", "fp8_e4m3_rowwise", "int8"},
            {"tf32": "the CPU has none"},
        ),
    ],
)
def test_dtype_capability_by_device(platform, cc, arch, runs, reasons):
    for key in runs:
        assert mm.capability_reason(key, platform, cc, arch) is None, key
    for key, text in reasons.items():
        why = mm.capability_reason(key, platform, cc, arch)
        assert why is not None and text in why, (key, why)


def test_dtype_capability_without_torch_support():
    assert "no float8" in mm.capability_reason("fp8_e4m3", "cuda", (9, 0), has_scaled_mm=False)
    assert "_int_mm" in mm.capability_reason("int8", "cpu", has_int_mm=False)


# ---- the Triton kernel in the interpreter ------------------------------------------------------------


def _ops(key: str, m: int, n: int, k: int) -> tuple[mm.DtypeSpec, mm.Operands]:
    torch.manual_seed(m * 1000 + n * 10 + k)
    spec = mm.dtype_spec(key)
    return spec, mm.make_operands(spec, m, n, k, CPU)


@pytest.mark.parametrize("key", ["fp32", "fp16", "fp8_e4m3", "fp8_e4m3_rowwise", "fp8_e5m2"])
@pytest.mark.parametrize(("m", "n", "k"), [(1, 40, 24), (33, 47, 65), (70, 100, 50)])
def test_triton_matmul_matches_reference_on_ragged_shapes(key, m, n, k):
    spec, ops = _ops(key, m, n, k)
    check = mm.make_checker(spec, ops)
    poison(ops.c)
    triton_matmul(ops.a, ops.w.t(), ops.c, scale_a=ops.scale_a, scale_b=ops.scale_b, config=SMALL_TILES)
    assert check() is None


def test_checker_rejects_a_matmul_that_drops_the_k_tail():
    spec, ops = _ops("fp16", 33, 47, 65)
    check = mm.make_checker(spec, ops)
    # a kernel that stops one K step early: the last column of A never contributes
    triton_matmul(ops.a[:, :-1], ops.w.t()[:-1], ops.c, config=SMALL_TILES)
    msg = check()
    assert msg is not None and "elements differ" in msg


def test_checker_rejects_a_matmul_that_forgets_a_scale():
    spec, ops = _ops("fp8_e4m3_rowwise", 20, 40, 32)
    check = mm.make_checker(spec, ops)
    triton_matmul(ops.a, ops.w.t(), ops.c, scale_a=ops.scale_a, config=SMALL_TILES)  # scale_b forgotten
    assert check() is not None


@pytest.mark.parametrize("key", ["int8-wo", "int4-wo"])
def test_checker_rejects_a_weight_only_kernel_that_ignores_the_scales(key):
    spec, ops = _ops(key, 8, 64, 256)
    check = mm.make_checker(spec, ops)
    mm.matmul_op(spec, "torch", ops)()
    assert check() is None
    # the same codes multiplied as if every scale were 1 (and no zero point): what a kernel that forgot them gives
    raw = ops.qw.codes.to(torch.bfloat16)
    ops.c.copy_(ops.a @ raw.t())
    assert check() is not None


def test_torch_ops_pass_the_checker_on_cpu():
    for key in ("fp32", "bf16", "fp8_e4m3", "fp8_e4m3_rowwise", "int8", "int8-wo", "int4-wo"):
        spec, ops = _ops(key, 24, 48, 128)
        check = mm.make_checker(spec, ops)
        poison(ops.c)
        mm.matmul_op(spec, "torch", ops)()
        assert check() is None, key


def test_sampled_check_covers_first_and_last_rows_of_big_problems():
    idx = mm.sample_indices(10_000, 64, CPU)
    assert idx[0] == 0 and idx[-1] == 9_999 and len(idx) == 64
    spec, ops = _ops("fp32", 300, 600, 16)
    check = mm.make_checker(spec, ops)
    mm.matmul_op(spec, "torch", ops)()
    ops.c[-1, -1] += 1.0  # corrupt the very last element
    assert "[" in check()


# ---- GPU only ------------------------------------------------------------------------------------------


@requires_cuda
@pytest.mark.parametrize("key", ["fp8_e4m3", "fp8_e4m3_rowwise"])
def test_scaled_mm_on_gpu(key):
    dev = torch.device("cuda", 0)
    if mm.device_reason(key, dev):
        pytest.skip(mm.device_reason(key, dev))
    spec = mm.spec_for(key, dev)
    ops = mm.make_operands(spec, 256, 512, 1024, dev)
    check = mm.make_checker(spec, ops)
    poison(ops.c)
    mm.matmul_op(spec, "torch", ops)()
    assert check() is None


@requires_cuda
def test_bf16_triton_matches_cublas_on_gpu():
    dev = torch.device("cuda", 0)
    if mm.device_reason("bf16", dev):
        pytest.skip(mm.device_reason("bf16", dev))
    spec = mm.spec_for("bf16", dev)
    ops = mm.make_operands(spec, 1000, 1500, 700, dev)  # not tile multiples
    check = mm.make_checker(spec, ops)
    mm.matmul_op(spec, "triton", ops)()
    assert check() is None
    tri = ops.c.clone()
    mm.matmul_op(spec, "torch", ops)()
    assert check() is None
    assert (tri.float() - ops.c.float()).abs().max() <= 0.05 * ops.c.float().abs().max()


@requires_cuda
def test_tf32_mode_changes_fp32_results_and_is_restored():
    dev = torch.device("cuda", 0)
    if mm.device_reason("tf32", dev):
        pytest.skip(mm.device_reason("tf32", dev))
    before = torch.backends.cuda.matmul.allow_tf32
    spec = mm.spec_for("fp32", dev)
    ops = mm.make_operands(spec, 512, 512, 512, dev)
    with mm.tf32_mode(False):
        mm.matmul_op(spec, "torch", ops)()
        exact = ops.c.clone()
    with mm.tf32_mode(True):
        mm.matmul_op(spec, "torch", ops)()
        assert mm.make_checker(mm.spec_for("tf32", dev), ops)() is None
    assert not torch.equal(exact, ops.c)  # 10-bit mantissas: TF32 really ran
    assert torch.backends.cuda.matmul.allow_tf32 == before


@pytest.mark.parametrize(
    ("m", "n", "k", "platform", "why"),
    [
        (16, 4096, 4096, "cuda", "needs M > 16 (M = 16)"),
        (1, 4096, 4096, "rocm", "needs M > 16 (M = 1)"),
        (32, 4100, 4096, "cuda", "multiples of 8"),
        (17, 4096, 4096, "cuda", None),
        (1, 4096, 4096, "cpu", None),  # the CPU kernel has no such limit
    ],
)
def test_int8_shapes_torch_int_mm_cannot_run_are_named(m, n, k, platform, why):
    got = mm.shape_reason("int8", m, n, k, platform)
    assert (got is None) if why is None else (why in got)
    assert mm.shape_reason("bf16", 1, 4100, 4096, "cuda") is None


@pytest.mark.parametrize("accumulation", ["precise", "fast"])
def test_fp8_accumulation_is_one_mode_for_both_variants_and_checked(accumulation):
    spec, ops = _ops("fp8_e4m3", 33, 47, 65)
    for variant in ("torch", "triton"):
        fn = mm.matmul_op(spec, variant, ops, accumulation)
        if variant == "triton":  # the interpreter needs small tiles
            from kernels.matmul import triton_matmul

            fn = lambda: triton_matmul(  # noqa: E731
                ops.a,
                ops.w.t(),
                ops.c,
                scale_a=ops.scale_a,
                scale_b=ops.scale_b,
                config=SMALL_TILES,
                fp8_fast_accum=accumulation == "fast",
            )
        poison(ops.c)
        fn()
        assert mm.make_checker(spec, ops)() is None, variant
    with pytest.raises(ValueError, match="fp8 accumulation 'sloppy'"):
        mm.matmul_op(spec, "torch", ops, "sloppy")


@pytest.mark.parametrize("key", ["fp32", "int4-wo"])
def test_weight_copies_are_distinct_memory_and_every_copy_is_checked(key):
    spec, ops = _ops(key, 4, 64, 256)
    rotation = [ops.with_weight_copy() for _ in range(3)]
    for o in rotation:
        assert o.w.data_ptr() != ops.w.data_ptr() and o.c.data_ptr() != ops.c.data_ptr()
        assert o.a.data_ptr() == ops.a.data_ptr()
    check = mm.make_checker(spec, ops, rotation)
    for o in [ops, *rotation]:
        poison(o.c)
    for o in [ops, *rotation]:
        mm.matmul_op(spec, "torch", o)()
    assert check() is None
    poison(rotation[1].c)  # one copy's kernel never ran: its C still holds the poison
    msg = check()
    assert msg is not None and "weight copy 2" in msg


def test_rotation_size_covers_the_rotation_bytes_within_the_cap():
    assert mm.rotation_size(mm.ROTATION_BYTES) == 1
    assert mm.rotation_size(mm.ROTATION_BYTES * 3) == 1
    assert mm.rotation_size(mm.ROTATION_BYTES // 4) == 4
    assert mm.rotation_size(mm.ROTATION_BYTES // 4 - 1) == 5
    assert mm.rotation_size(1) == mm.MAX_ROTATION


def test_int4_on_the_cpu_needs_torch_2_6_packing(monkeypatch):
    """torch 2.5 is allowed but has no CPU int4 packing: int4-wo on a CPU says so instead of failing."""
    import torch

    from probes.gemm import capability_reason

    assert capability_reason("int4-wo", "cpu") is None
    monkeypatch.delattr(torch, "_convert_weight_to_int4pack_for_cpu")
    assert "needs torch 2.6" in capability_reason("int4-wo", "cpu")
