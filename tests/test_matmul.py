"""Matmul probe: counting, decode shapes from configs, dtype capability, the Triton kernel in the interpreter,
the checker, OOM handling and time bounding, then GPU-only paths (skipped without CUDA)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import fast_timing_toml, requires_cuda

import probes.matmul as mm
from analysis.formulas import arithmetic_intensity, gemm_bytes, gemm_flops
from analysis.models import ModelConfigError, decode_linears, load_model
from kernels.matmul import triton_matmul
from probes.config import load_config
from probes.context import Context
from probes.device import Nvml

CPU = torch.device("cpu")
SMALL_TILES = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 16}


def test_flop_and_byte_counting():
    assert gemm_flops(2, 3, 4) == 48
    # A 2x4 bf16 (16 B) + B 4x3 bf16 (24 B) + C 2x3 bf16 (12 B)
    assert gemm_bytes(2, 3, 4, 2, 2, 2) == 52
    # fp8 in, bf16 out: the LM-head GEMV of Llama 3.1 8B at M = 1 reads 128256 x 4096 bytes of weights
    assert gemm_bytes(1, 128256, 4096, 1, 1, 2) == 4096 + 128256 * 4096 + 2 * 128256
    assert arithmetic_intensity(
        gemm_flops(4096, 4096, 4096), gemm_bytes(4096, 4096, 4096, 2, 2, 2)
    ) == pytest.approx(4096 / 3)


def test_decode_shapes_from_config():
    shapes = {
        lin.op: (lin.n, lin.k, lin.per_step) for lin in decode_linears(load_model("llama-3.1-70b"), tp=1)
    }
    assert shapes["qkv"] == (10240, 8192, 80)  # (64 + 2 * 8) heads x 128
    assert shapes["o"] == (8192, 8192, 80)
    assert shapes["gate_up"] == (2 * 28672, 8192, 80)
    assert shapes["down"] == (8192, 28672, 80)
    assert shapes["lm_head"] == (128256, 8192, 1)
    tp8 = {lin.op: (lin.n, lin.k) for lin in decode_linears(load_model("llama-3.1-70b"), tp=8)}
    assert tp8["qkv"] == ((8 + 2 * 1) * 128, 8192)  # one KV head per rank
    assert tp8["down"] == (8192, 28672 // 8)
    small = {lin.op: (lin.n, lin.k) for lin in decode_linears(load_model("llama-3.2-1b"))}
    assert small["qkv"] == ((32 + 2 * 8) * 64, 2048)  # head_dim given explicitly: 64, not 2048 / 32
    mixtral = {lin.op: lin.per_step for lin in decode_linears(load_model("mixtral-8x7b"))}
    assert mixtral["gate_up"] == 32 * 2  # two routed experts per token per layer
    with pytest.raises(ModelConfigError, match="does not divide"):
        decode_linears(load_model("qwen2.5-0.5b"), tp=4)  # 14 heads
    with pytest.raises(ModelConfigError, match="unknown model"):
        load_model("gpt-17")


def test_local_config_json_path(tmp_path):
    cfg = json.loads(load_model.__globals__["MODELS_DIR"].joinpath("llama-3.1-8b.json").read_text())
    cfg["num_key_value_heads"] = 4
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    assert load_model(str(p)).kv_heads == 4
    p.write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ModelConfigError, match="missing or non-integer"):
        load_model(str(p))


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
    mm.poison(ops.c)
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


def test_torch_ops_pass_the_checker_on_cpu():
    for key in ("fp32", "bf16", "fp8_e4m3", "fp8_e4m3_rowwise", "int8"):
        spec, ops = _ops(key, 24, 48, 64)
        check = mm.make_checker(spec, ops)
        mm.poison(ops.c)
        mm.matmul_op(spec, "torch", ops)()
        assert check() is None, key


def test_sampled_check_covers_first_and_last_rows_of_big_problems():
    idx = mm._sample(10_000, 64, CPU)
    assert idx[0] == 0 and idx[-1] == 9_999 and len(idx) == 64
    spec, ops = _ops("fp32", 300, 600, 16)
    check = mm.make_checker(spec, ops)
    mm.matmul_op(spec, "torch", ops)()
    ops.c[-1, -1] += 1.0  # corrupt the very last element
    assert "[" in check()


# ---- the probe on the CPU ---------------------------------------------------------------------------

TINY = (
    fast_timing_toml(0.1)
    + """
[matmul]
dtypes = ["fp32", "tf32", "bf16", "fp8_e4m3"]
square_sizes = [64, 128]
decode_models = ["qwen2.5-0.5b"]
decode_dtypes = ["fp32"]
decode_m = [1, 2]
first_warmup_s = 0.0
[profiles.t]
probes = ["matmul"]
"""
)


def ctx_for(tmp_path, text: str = TINY) -> Context:
    p = tmp_path / "b.toml"
    p.write_text(text)
    return Context(cfg=load_config(p), devices=[CPU], nvml=Nvml())


def test_probe_on_cpu_measures_verifies_and_skips_with_reasons(tmp_path):
    ctx = ctx_for(tmp_path)
    ms = mm.run(ctx.cfg, ctx)
    assert len(ms) == mm.n_cases(ctx)
    by = {m.case: m for m in ms}
    ok = by["square/fp32/torch/128"]
    assert ok.status == "ok" and ok.verification["status"] == "passed" and ok.unit == "flop_per_s"
    assert ok.params["flops"] == 2 * 128**3 and ok.params["bytes_moved"] == 3 * 128 * 128 * 4
    assert ok.timing["cache_flushed"] is True
    assert (
        by["square/tf32/torch/64"].status == "skipped" and "CPU has none" in by["square/tf32/torch/64"].error
    )
    assert (
        by["square/bf16/triton/64"].status == "skipped" and "GPUs only" in by["square/bf16/triton/64"].error
    )
    fp8 = by["square/fp8_e4m3/torch/64"]
    assert (
        fp8.status == "ok"
        and fp8.params["a_dtype"] == "float8_e4m3fn"
        and fp8.params["out_dtype"] == "bfloat16"
    )
    heads = {m.headline for m in ms if m.headline}
    assert heads == {"matmul_peak_fp32_torch", "matmul_peak_bf16_torch", "matmul_peak_fp8_e4m3_torch"}
    dec = by["decode/qwen2.5-0.5b/lm_head/fp32/M=2"]
    assert dec.status == "ok" and (dec.params["n"], dec.params["k"]) == (151936, 896)
    assert dec.params["arithmetic_intensity"] == pytest.approx(
        dec.params["flops"] / dec.params["bytes_moved"]
    )


def test_out_of_memory_is_recorded_and_larger_sizes_are_not_tried(tmp_path, monkeypatch):
    real = mm.make_operands

    def fails_at_256(spec, m, n, k, device):
        if m >= 256:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(spec, m, n, k, device)

    monkeypatch.setattr(mm, "make_operands", fails_at_256)
    ctx = ctx_for(
        tmp_path,
        TINY.replace("[64, 128]", "[128, 256, 512]")
        .replace('"fp32", "tf32", "bf16", "fp8_e4m3"', '"fp32"')
        .replace("decode_m = [1, 2]", "decode_m = [1]"),
    )
    ms = {m.case: m for m in mm.run(ctx.cfg, ctx)}
    assert ms["square/fp32/torch/128"].status == "ok"
    assert ms["square/fp32/torch/256"].status == "error" and ms["square/fp32/torch/256"].error.startswith(
        "out of memory"
    )
    assert (
        ms["square/fp32/torch/512"].status == "skipped"
        and "already ran out of memory" in ms["square/fp32/torch/512"].error
    )
    assert ms["decode/qwen2.5-0.5b/qkv/fp32/M=1"].status == "ok"  # the sweep goes on


def test_cases_are_bounded_by_the_time_budget(tmp_path):
    text = (
        TINY.replace("[64, 128]", "[64, 2048, 4096]")
        .replace('"fp32", "tf32", "bf16", "fp8_e4m3"', '"bf16"')
        .replace("decode_m = [1, 2]", "decode_m = [1]")
    )
    ctx = ctx_for(tmp_path, text.replace("case_budget_s = 0.1", "case_budget_s = 0.01"))
    ms = {m.case: m for m in mm.run(ctx.cfg, ctx)}
    assert ms["square/bf16/torch/64"].status == "ok"
    big = ms["square/bf16/torch/4096"]
    assert big.status == "skipped" and big.error.startswith("time-bounded: one multiply predicted at")


def test_search_shapes_are_nearest_first():
    shapes = mm.search_shapes(1024, 256, 1)
    assert len(shapes) == 26 and (1024, 1024, 1024) not in shapes
    assert sum(abs(x - 1024) for x in shapes[0]) == 256
    assert all(min(s) > 0 for s in mm.search_shapes(256, 256, 2))


# ---- GPU only ------------------------------------------------------------------------------------------


@requires_cuda
@pytest.mark.parametrize("key", ["fp8_e4m3", "fp8_e4m3_rowwise"])
def test_scaled_mm_on_gpu(key):
    dev = torch.device("cuda", 0)
    if mm.device_reason(key, dev):
        pytest.skip(mm.device_reason(key, dev))
    spec = mm._spec_for(key, dev)
    ops = mm.make_operands(spec, 256, 512, 1024, dev)
    check = mm.make_checker(spec, ops)
    mm.poison(ops.c)
    mm.matmul_op(spec, "torch", ops)()
    assert check() is None


@requires_cuda
def test_bf16_triton_matches_cublas_on_gpu():
    dev = torch.device("cuda", 0)
    if mm.device_reason("bf16", dev):
        pytest.skip(mm.device_reason("bf16", dev))
    spec = mm._spec_for("bf16", dev)
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
    spec = mm._spec_for("fp32", dev)
    ops = mm.make_operands(spec, 512, 512, 512, dev)
    with mm.tf32_mode(False):
        mm.matmul_op(spec, "torch", ops)()
        exact = ops.c.clone()
    with mm.tf32_mode(True):
        mm.matmul_op(spec, "torch", ops)()
        assert mm.make_checker(mm._spec_for("tf32", dev), ops)() is None
    assert not torch.equal(exact, ops.c)  # 10-bit mantissas: TF32 really ran
    assert torch.backends.cuda.matmul.allow_tf32 == before
