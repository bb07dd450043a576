"""Weight-only int8 / int4 linear layers: the kernels torch runs against the float64 dequantized product."""

from __future__ import annotations

import pytest
import torch

from probes import quant

CPU = torch.device("cpu")


@pytest.mark.parametrize("fmt", quant.WEIGHT_ONLY)
@pytest.mark.parametrize("m", [1, 5, 32])
def test_kernel_computes_x_times_the_dequantized_weight(fmt, m):
    torch.manual_seed(0)
    qw = quant.random_weight(fmt, 96, 256, CPU, group_size=64)
    x = torch.empty(m, 256, dtype=torch.bfloat16).uniform_(-1, 1)
    got = qw.matmul(x).double()
    ref = x.double() @ qw.dequantized().t()
    assert got.shape == (m, 96) and got.dtype == torch.float64
    assert torch.allclose(got, ref, rtol=2e-2, atol=2e-2 * 16), (got - ref).abs().max()


def test_int4_dequantization_follows_the_tinygemm_convention():
    qw = quant.random_weight("int4-wo", 16, 64, CPU, group_size=32)
    codes, sz = qw.codes.double(), qw.scales.double()
    w = qw.dequantized()
    # (q - 8) * scale + zero, the scale and zero of group k // 32 and row n
    assert w[3, 40].item() == pytest.approx((codes[3, 40] - 8) * sz[1, 3, 0] + sz[1, 3, 1])
    assert w[7, 5].item() == pytest.approx((codes[7, 5] - 8) * sz[0, 7, 0] + sz[0, 7, 1])


def test_a_kernel_given_other_codes_differs_from_the_reference():
    # the reference is not a restatement of the kernel: flipping a code changes what the kernel should give
    qw = quant.random_weight("int8-wo", 16, 64, CPU)
    x = torch.ones(1, 64, dtype=torch.bfloat16)
    before = qw.dequantized()
    qw.codes[0, 0] = -qw.codes[0, 0] if qw.codes[0, 0] != 0 else 5
    assert not torch.equal(before, qw.dequantized())
    assert (qw.matmul(x).double()[0, 0] - (x.double() @ qw.dequantized().t())[0, 0]).abs() > 1e-3


def test_bytes_and_shape_rules():
    # the projection's formula: int4 carries a bf16 scale and zero per group (0.5 + 4 / 128 = 0.53125)
    assert quant.bytes_per_weight("int8-wo") == 1.0 and quant.bytes_per_weight("int4-wo") == 0.53125
    assert quant.bytes_per_weight("int4-wo", 32) == 0.625
    w = quant.random_weight("int4-wo", 64, 256, torch.device("cpu"), group_size=128)
    assert w.nbytes() == 64 * 256 * quant.bytes_per_weight("int4-wo", 128)  # what the kernel really reads
    assert quant.shape_reason("int4-wo", 96, 200, 128, "cpu") and "group size" in quant.shape_reason(
        "int4-wo", 96, 200, 128, "cpu"
    )
    assert quant.shape_reason("int4-wo", 96, 256, 128, "cpu") is None
    assert "K % 128" in quant.shape_reason("int4-wo", 96, 64 * 3, 64, "cuda")
    assert quant.shape_reason("int8-wo", 7, 9, 128, "cuda") is None
    assert "N % 16" in quant.shape_reason("int4-wo", 40, 128, 128, "cpu")
    with pytest.raises(ValueError, match="unknown weight-only format"):
        quant.random_weight("int2-wo", 8, 64, CPU)
    dropped = quant.random_weight("int8-wo", 8, 64, CPU, keep_codes=False)
    with pytest.raises(ValueError, match="dropped"):
        dropped.dequantized()


def test_int8_weight_only_on_gpus_after_torch_2_9_is_not_timed():
    """torch 2.9's reference int8 kernel on GPUs would make every int8-wo projection several times too slow."""
    assert quant.kernel_reason("int8-wo", "cuda", "2.9.0+cu128") and "190529" in quant.kernel_reason(
        "int8-wo", "rocm", "2.13.0"
    )
    assert quant.kernel_reason("int8-wo", "cuda", "2.8.0") is None
    assert quant.kernel_reason("int8-wo", "cpu", "2.13.0") is None  # the CPU kernel is the real one
    assert quant.kernel_reason("int4-wo", "cuda", "2.13.0") is None
    # tinygemm's N tile on ROCm is 16
    assert quant.shape_reason("int4-wo", 8, 256, 128, "rocm") and not quant.shape_reason(
        "int4-wo", 16, 256, 128, "rocm"
    )
