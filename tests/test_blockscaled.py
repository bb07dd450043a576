"""Blackwell's block-scaled formats (probes/blockscaled.py): E2M1 rounding, packing, MX and NVFP4 scales, the
cuBLAS scale layout, dequantization, and the checker, for real on the CPU; the GEMM itself on sm_100+ only."""

from __future__ import annotations

import pytest
import torch

from probes import blockscaled as bs
from probes import gemm

CPU = torch.device("cpu")
BLACKWELL = (
    torch.cuda.is_available() and torch.cuda.get_device_capability() >= (10, 0) and not torch.version.hip
)


def test_e2m1_rounds_to_nearest_ties_to_even_and_saturates():
    v = torch.tensor([0.0, 0.25, 0.26, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 5.1, 7.0, -0.5, -3.0, -100.0])
    got = bs.e2m1_values(bs.e2m1_codes(v)).tolist()
    assert got == [0.0, 0.0, 0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0, -0.5, -3.0, -6.0]
    assert bs.e2m1_codes(torch.tensor([-3.0])).item() == 0b1101  # sign bit 3, magnitude code 5


def test_fp4_packs_two_per_byte_low_nibble_first():
    codes = torch.tensor([[1, 2, 15, 8]], dtype=torch.uint8)
    packed = bs.pack_fp4(codes)
    assert packed.tolist() == [[0x21, 0x8F]]
    assert torch.equal(bs.unpack_fp4(packed), codes)


@pytest.mark.parametrize("fmt", ["mxfp8", "mxfp4"])
def test_mx_scales_are_powers_of_two_that_put_each_block_max_in_the_top_binade(fmt):
    x = torch.randn(128, 256) * torch.logspace(-3, 3, 256)  # blocks of very different magnitudes
    q = bs.quantize(x, fmt)
    assert torch.equal(q.scales, torch.pow(2.0, torch.log2(q.scales).round()))  # exact powers of two
    elems = bs.dequantize(q) / q.scales.double().repeat_interleave(32, dim=1)
    block_max = elems.abs().reshape(128, -1, 32).amax(-1)
    top = {"mxfp8": 448.0, "mxfp4": 6.0}[
        fmt
    ]  # the element format's largest value: never clipped, at most 2x under
    assert float(block_max.min()) > top / 2 * 0.9 and float(block_max.max()) <= top


def test_nvfp4_has_e4m3_block_scales_under_one_tensor_scale():
    x = torch.randn(128, 128)
    q = bs.quantize(x, "nvfp4")
    assert q.global_scale == pytest.approx(float(x.abs().max()) / (448 * 6))
    assert torch.equal(q.scales, q.scales.to(torch.float8_e4m3fn).to(torch.float32))  # exactly E4M3 values
    assert q.scales.shape == (128, 8) and q.data.shape == (128, 64) and q.data.dtype == torch.uint8


@pytest.mark.parametrize("fmt", ["mxfp8", "nvfp4", "mxfp4"])
def test_representable_values_survive_quantization_exactly_and_others_within_half_a_step(fmt):
    x = torch.empty(128, 256).uniform_(-1, 1)
    q = bs.quantize(x, fmt)
    d = bs.dequantize(q)
    again = bs.dequantize(bs.quantize(d.float(), fmt))  # what the codes describe is a fixed point
    assert torch.equal(again, d)
    # relative to the block's largest value: E4M3 keeps 3 mantissa bits (half a step, 2^-4, of the top binade);
    # E2M1's steps are 0.5, 1 and 2 below 6: half of the top step, 1/6 of the block maximum
    rel = {"mxfp8": 2.0**-4, "nvfp4": 1 / 6 + 0.02, "mxfp4": 1 / 6}[fmt]
    block = bs.FORMATS[fmt][0]
    top = x.abs().reshape(128, -1, block).amax(-1).repeat_interleave(block, dim=1).double()
    assert float(((d - x.double()).abs() / top).max()) <= rel


def upstream_to_blocked():
    """torch's own reference rearrangement (torch/testing/_internal/common_quantized.py `to_blocked`), loaded
    from the installed torch without importing that module (it needs the test-only `expecttest`)."""
    import ast
    from pathlib import Path

    path = Path(torch.__file__).parent / "testing/_internal/common_quantized.py"
    if not path.is_file():
        pytest.skip("this torch install has no testing/_internal/common_quantized.py")
    tree = ast.parse(path.read_text())
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("ceil_div", "to_blocked")]
    if len(funcs) != 2:
        pytest.skip("torch's common_quantized.py has no to_blocked / ceil_div here")
    namespace: dict = {"torch": torch}
    exec(compile(ast.Module(body=funcs, type_ignores=[]), str(path), "exec"), namespace)
    return namespace["to_blocked"]


def test_the_scale_layout_is_cublas_and_torchs_own():
    s = torch.arange(256 * 8, dtype=torch.float32).view(256, 8)
    flat = bs.swizzle(s)
    assert torch.equal(bs.unswizzle(flat, 256, 8), s)
    assert flat[:8].tolist() == [0, 1, 2, 3, 256, 257, 258, 259]  # row r of a tile at (r % 32, r // 32)
    to_blocked = upstream_to_blocked()
    assert torch.equal(flat, to_blocked(s))  # upstream's reference rearrangement
    odd = torch.arange(130 * 5, dtype=torch.float32).view(130, 5)  # padded to 256 x 8 with zeros
    assert torch.equal(bs.swizzle(odd), to_blocked(odd)) and torch.equal(
        bs.unswizzle(bs.swizzle(odd), 130, 5), odd
    )


@pytest.mark.parametrize("fmt", ["mxfp8", "nvfp4", "mxfp4"])
def test_scale_tensors_carry_the_scales_exactly_in_the_dtype_scaled_mm_reads(fmt):
    q = bs.quantize(torch.randn(128, 256), fmt)
    t = bs.scale_tensor(q, swizzled=False)
    assert t.dtype == (torch.float8_e4m3fn if fmt == "nvfp4" else torch.float8_e8m0fnu)
    assert torch.equal(t.to(torch.float32), q.scales)


@pytest.mark.parametrize("fmt", ["mxfp8", "nvfp4", "mxfp4"])
def test_the_checker_passes_the_right_product_and_rejects_a_wrong_one(fmt):
    spec = gemm.dtype_spec(fmt)
    ops = gemm.make_operands(spec, 256, 256, 512, CPU)
    qa, qb = ops.blocks
    assert ops.a is qa.data and ops.w is qb.data and spec.bytes_per_weight() == bs.bytes_per_element(fmt)
    ops.c = (bs.dequantize(qa) @ bs.dequantize(qb).t()).to(torch.bfloat16)  # what a correct kernel returns
    check = gemm.make_checker(spec, ops)
    assert check() is None
    ops.c[0, 0] += 4.0
    assert check() is not None
    ops.c = (qa.data.float() if fmt == "mxfp8" else torch.zeros(256, 512)) @ torch.ones(512, 256)
    assert check() is not None  # ignoring the scales is caught


def test_who_runs_block_scaled_formats_and_why_not():
    for fmt in ("mxfp8", "nvfp4", "mxfp4"):
        assert "on the CPU its packing, scales and dequantization are tested" in gemm.capability_reason(
            fmt, "cpu"
        )
        assert "needs sm_100 or newer (Blackwell); this device is sm_90" in gemm.capability_reason(
            fmt, "cuda", (9, 0)
        )
        assert gemm.capability_reason(fmt, "cuda", (10, 0)) is None
    assert gemm.capability_reason("mxfp4", "rocm", arch="gfx950") is None
    assert "MI350 (gfx950) or newer" in gemm.capability_reason("mxfp8", "rocm", arch="gfx942")
    assert "no AMD architecture runs it" in gemm.capability_reason("nvfp4", "rocm", arch="gfx950")
    assert (
        gemm.shape_reason("nvfp4", 1, 4096, 4096, "cuda") is None
    )  # a decode GEMV: M is free (padded tiles)
    assert "K to be a multiple of 32" in gemm.shape_reason("mxfp8", 16, 4096, 100, "cuda")
    assert "N to be a multiple of 16" in gemm.shape_reason("mxfp4", 16, 100, 4096, "cuda")


def test_the_matmul_probe_skips_them_on_the_cpu_with_the_reason(tmp_path):
    from probes import matmul
    from probes.config import load_config
    from probes.context import Context
    from probes.nvml import NoNvml

    cfg = tmp_path / "b.toml"
    cfg.write_text(
        '[matmul]\nsquare_sizes = [256]\ndtypes = ["mxfp8", "nvfp4", "mxfp4"]\nvariants = ["torch"]\n'
        'decode_models = []\n[profiles.t]\nprobes = ["matmul"]\n'
    )
    ms = matmul.run(Context(cfg=load_config(cfg), devices=[CPU], nvml=NoNvml()))
    assert [m.status for m in ms] == ["skipped"] * 3 and all("block-scaled" in m.error for m in ms)


@pytest.mark.skipif(not BLACKWELL, reason="block-scaled GEMMs need an NVIDIA sm_100+ GPU (Blackwell)")
@pytest.mark.parametrize("fmt", ["mxfp8", "nvfp4", "mxfp4"])
def test_scaled_mm_on_blackwell_matches_the_float64_reference(fmt):
    dev = torch.device("cuda")
    spec = gemm.dtype_spec(fmt)
    ops = gemm.make_operands(spec, 512, 512, 1024, dev)
    gemm.matmul_op(spec, "torch", ops)()
    torch.cuda.synchronize()
    assert gemm.make_checker(spec, ops)() is None


def test_b200_block_scaled_peaks_are_judged_against_its_fp4_and_fp8_sheet_figures():
    """A B200 run's matmul_peak_nvfp4 / _mxfp8 headlines are judged against the sheet's FP4 (9000 dense) and FP8
    (4500) TFLOPS, as any other peak: a healthy figure passes, a third of it fails."""
    from helpers import h100_doc

    from analysis.verdicts import validate

    doc = h100_doc("NVIDIA B200")
    doc["summary"] = [
        {
            "probe": "matmul",
            "name": "matmul_peak_nvfp4_torch",
            "device": "cuda:0",
            "value": 7.2e15,
            "unit": "flop_per_s",
        },
        {
            "probe": "matmul",
            "name": "matmul_peak_mxfp8_torch",
            "device": "cuda:0",
            "value": 1.2e15,
            "unit": "flop_per_s",
        },
    ]
    v = {x.figure: x for x in validate(doc)}
    assert v["matmul_peak_nvfp4_torch"].spec == 9000e12 and v["matmul_peak_nvfp4_torch"].verdict == "pass"
    assert v["matmul_peak_mxfp8_torch"].spec == 4500e12 and v["matmul_peak_mxfp8_torch"].verdict == "fail"


def test_the_projection_accepts_block_scaled_weights():
    from analysis import decode, formats, hardware, specs
    from analysis.models import load_model

    hw = hardware.profile_from_spec(specs.get("b200-sxm-180gb"))
    m = load_model("llama-3.1-70b")
    fp8, nv = (formats.Query(m, f, None, 1, 512, 128) for f in ("fp8", "nvfp4"))
    assert decode.weights_bytes_per_gpu(nv) < 0.6 * decode.weights_bytes_per_gpu(fp8)
    assert formats.weight_bytes("nvfp4") == 0.5 + 1 / 16 and formats.weight_bytes("mxfp8") == 1 + 1 / 32
    assert hw.compute("fp4") > 1.8 * hw.compute("fp8")  # the sheet's FP4 rate (9000) x its default fraction
    assert decode.decode_step(hw, nv, 1, 600).seconds < decode.decode_step(hw, fp8, 1, 600).seconds
    assert decode.prefill_s(hw, nv, 1) < decode.prefill_s(hw, fp8, 1)
