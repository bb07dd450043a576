"""Matmul probe: counting, decode shapes from configs, the probe on the CPU with OOM handling and time
bounding, the shape search. One GEMM's run and check is tests/test_gemm.py."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import RecordingDeviceContext, fast_timing_toml, requires_cuda

import probes.matmul as mm
from analysis.formulas import arithmetic_intensity, gemm_bytes, gemm_flops
from analysis.models import ModelConfigError, decode_linears, load_model
from probes.config import load_config
from probes.context import Context
from probes.gemm import rotation_size
from probes.nvml import Nvml

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
    with pytest.raises(ModelConfigError, match="missing intermediate_size"):
        load_model(str(p))


# ---- the probe on the CPU ---------------------------------------------------------------------------

# A budget far above what the cases need (they stop at min_reps, target_rse 0.5): the time predictor must not
# skip a case these tests expect to run when the box is busy and the CPU slow.
TINY = (
    fast_timing_toml(2.0)
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
    ms = mm.run(ctx)
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
    assert dec.timing["ops_per_call"] == 1  # 545 MB: cold without copies
    qkv = by["decode/qwen2.5-0.5b/qkv/fp32/M=1"]  # 4 MB: rotates over copies, each one checked
    assert qkv.timing["ops_per_call"] == rotation_size(1152 * 896 * 4) > 1
    assert qkv.verification["status"] == "passed"
    assert dec.params["arithmetic_intensity"] == pytest.approx(
        dec.params["flops"] / dec.params["bytes_moved"]
    )


def test_out_of_memory_is_recorded_and_larger_sizes_are_not_tried(tmp_path, monkeypatch):
    real = mm.make_operands

    def fails_at_256(spec, m, n, k, device, *args):
        if m >= 256:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(spec, m, n, k, device, *args)

    monkeypatch.setattr(mm, "make_operands", fails_at_256)
    ctx = ctx_for(
        tmp_path,
        TINY.replace("[64, 128]", "[128, 256, 512]")
        .replace('"fp32", "tf32", "bf16", "fp8_e4m3"', '"fp32"')
        .replace("decode_m = [1, 2]", "decode_m = [1]"),
    )
    ms = {m.case: m for m in mm.run(ctx)}
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
    ctx = ctx_for(tmp_path, text.replace("case_budget_s = 2.0", "case_budget_s = 0.01"))
    ms = {m.case: m for m in mm.run(ctx)}
    assert ms["square/bf16/torch/64"].status == "ok"
    big = ms["square/bf16/torch/4096"]
    assert big.status == "skipped" and big.error.startswith("time-bounded: one multiply predicted at")


def test_search_shapes_are_nearest_first():
    shapes = mm.search_shapes(1024, 256, 1)
    assert len(shapes) == 26 and (1024, 1024, 1024) not in shapes
    assert sum(abs(x - 1024) for x in shapes[0]) == 256
    assert all(min(s) > 0 for s in mm.search_shapes(256, 256, 2))


def test_the_trial_multiply_runs_inside_its_devices_context(tmp_path, monkeypatch):
    """Triton launches on the current device: a trial on cuda:1 outside its context hits cuda:0."""
    recording = RecordingDeviceContext()
    monkeypatch.setattr(mm, "device_context", recording)
    prober = mm.DeviceRun(ctx_for(tmp_path), CPU)
    assert prober.reason("fp32", "torch") is None
    assert recording.entered == ["cpu"]


@requires_cuda
def test_triton_bf16_matmul_runs_on_the_last_gpu(tmp_path):
    last = torch.device("cuda", torch.cuda.device_count() - 1)
    ctx = ctx_for(tmp_path)
    prober = mm.DeviceRun(ctx, last)
    assert prober.reason("bf16", "triton") is None
    m = prober.measure(mm.Case("square", "bf16", "triton", 1024, 1024, 1024))
    assert m.status == "ok" and m.verification["status"] == "passed", m.error


def test_past_its_deadline_the_decode_gemms_are_trimmed_and_the_peaks_kept(tmp_path):
    """Under the profile's time budget (probes.schedule) the squares, where the peak headlines come from,
    always run; the decode-shaped GEMMs past the probe's deadline are skipped as trimmed, with the reason."""
    import time

    text = TINY.replace('"fp32", "tf32", "bf16", "fp8_e4m3"', '"fp32"')
    ctx = ctx_for(tmp_path, text.replace('decode_dtypes = ["fp32"]', 'decode_dtypes = ["fp32", "int4-wo"]'))
    ctx.options.update(deadline=time.time() - 1, trim_reason="trimmed: test")
    ms = mm.run(ctx)
    assert len(ms) == mm.n_cases(ctx)
    squares = [m for m in ms if m.params["kind"] == "square" and m.params["variant"] == "torch"]
    assert all(m.status == "ok" for m in squares) and any(m.headline for m in squares)
    # the first decode format's GEMMs (the run's own projection) run first and in full; the later ones trimmed
    decode = [m for m in ms if m.params["kind"] == "decode"]
    first = [m for m in decode if m.params["dtype"] == "fp32"]
    later = [m for m in decode if m.params["dtype"] != "fp32"]  # int4-wo layers and its bf16 LM head
    assert first and all(m.status == "ok" for m in first)
    assert later and all(m.status == "skipped" and m.error == "trimmed: test" for m in later)
    assert decode.index(first[-1]) < decode.index(later[0])
