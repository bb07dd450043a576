"""The spec database against the reference sheet's derived facts, and the device-name lookup."""

from __future__ import annotations

import pytest

from analysis import specs


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("NVIDIA H100 80GB HBM3", "h100-sxm5-80gb"),
        ("NVIDIA H100 PCIe", "h100-pcie-80gb"),
        ("NVIDIA H100 NVL", "h100-nvl-94gb"),
        ("NVIDIA H200", "h200-sxm-141gb"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA A100-SXM4-80GB", "a100-sxm4-80gb"),
        ("NVIDIA A100-SXM4-40GB", "a100-sxm4-40gb"),
        ("NVIDIA A100 80GB PCIe", "a100-pcie-80gb"),
        ("Tesla V100-SXM2-32GB", "v100-sxm2-32gb"),
        ("AMD Instinct MI300X", "mi300x"),
        ("NVIDIA B200", "b200-sxm-180gb"),
        ("NVIDIA A100-PCIE-40GB", "a100-pcie-40gb"),
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
        ("NVIDIA RTX 6000 Ada Generation", "rtx-6000-ada"),
        ("NVIDIA L40", "l40"),
        ("NVIDIA A10", "a10"),
        ("NVIDIA RTX A6000", "rtx-a6000"),
        ("NVIDIA H20", "h20"),
        ("AMD Instinct MI250X", "mi250x-gcd"),
        ("AMD Instinct MI325X", "mi325x"),
    ],
)
def test_lookup_from_nvml_and_torch_names(name, key):
    assert specs.lookup(name) == key


@pytest.mark.parametrize(
    "name",
    [
        "NVIDIA GH200 480GB",  # not an H200: a Grace Hopper superchip
        "NVIDIA GB200",  # not a B200: a Grace Blackwell superchip (issue 22)
        "NVIDIA H200 NVL",
        "NVIDIA A10G",  # AWS's part: no public sheet
        "AMD Instinct MI250X/MI250",  # either part reports this: no guess
        "NVIDIA GeForce RTX 4090 D",
        "AMD EPYC",
        "",
    ],
)
def test_unknown_devices_are_none_never_a_guess(name):
    assert specs.lookup(name) is None
    assert "unknown SKU" in specs.unknown_sku_line(name)


def test_every_reference_sku_is_there_dense_and_decimal():
    gpus = specs.all_gpus()
    assert len(gpus) == 21
    for g in gpus.values():
        assert g.source and g.memory_bandwidth_gb_s > 0
        if g.fp8_tflops:  # FP8 is exactly twice the dense 16-bit figure on every sheet here
            assert g.fp8_tflops == pytest.approx(2 * g.bf16_tflops, rel=0.02)
        if g.link_gb_s:
            assert g.link_direction == "total, both directions"
    assert gpus["a100-sxm4-80gb"].fp8_tflops is None and gpus["a100-sxm4-80gb"].flop_per_s("fp8_e4m3") is None
    assert gpus["h100-sxm5-80gb"].flop_per_s("fp8_e4m3_rowwise") == pytest.approx(1978.9e12)
    assert gpus["h100-sxm5-80gb"].link_bytes_per_s_per_direction == 450e9
    with pytest.raises(specs.UnknownGPU, match="unknown GPU key 'h300'"):
        specs.get("h300")


@pytest.mark.parametrize(
    ("key", "rel"),
    [
        ("h100-sxm5-80gb", 0.001),  # 132 x 1.83 GHz x 4096 = 989.4 TF
        ("a100-sxm4-80gb", 0.001),  # 108 x 1.41 GHz x 2048 = 311.9 TF
        ("l40s", 0.015),  # 142 x 2.52 GHz x 1024 = 366 TF, the sheet says 362
        ("l4", 0.002),
        ("h100-pcie-80gb", 0.001),
        ("h100-nvl-94gb", 0.001),
        ("mi300x", 0.001),  # 304 CUs x 2.1 GHz x 2048
        ("v100-sxm2-32gb", 0.003),  # FP16: 80 x 1.53 GHz x 1024
    ],
)
def test_tensor_peak_from_sms_clock_and_flop_per_clock(key, rel):
    g = specs.get(key)
    per_clock = specs.arch_flop_per_clock_per_sm(g.arch)
    peak = specs.tensor_peak_flop_per_s(g.sm_count, g.tensor_clock_mhz, per_clock)
    assert peak == pytest.approx(g.flop_per_s("fp16"), rel=rel)
    if g.fp8_tflops:
        fp8 = specs.tensor_peak_flop_per_s(
            g.sm_count, g.tensor_clock_mhz, specs.arch_flop_per_clock_per_sm(g.arch, "fp8")
        )
        assert fp8 == pytest.approx(g.flop_per_s("fp8"), rel=rel)


def test_theoretical_bandwidth_from_bus_width_and_memory_clock():
    assert specs.theoretical_bandwidth_bytes_per_s(5120, 1593) == pytest.approx(
        2039e9, rel=0.001
    )  # A100 80GB
    assert specs.theoretical_bandwidth_bytes_per_s(384, 9001) == pytest.approx(864e9, rel=0.001)  # L40S


@pytest.mark.parametrize("key", sorted(k for k, g in specs.all_gpus().items() if g.tensor_clock_mhz))
def test_every_dtype_of_every_sheet_is_sms_x_clock_x_its_own_rate(key):
    """fp32 (CUDA cores, at the maximum clock where the sheet gives one), tf32, 16-bit, fp8 and int8 alike:
    the per-dtype FLOP/clk table reproduces each sheet, GeForce/L40 half-rate accumulation included."""
    g = specs.get(key)
    checked = 0
    for dtype in ("fp32", "tf32", "fp16", "bf16", "fp8", "int8"):
        sheet, per_clock = g.flop_per_s(dtype), g.flop_per_clock_per_sm(dtype)
        if sheet is None:
            continue
        assert per_clock is not None, dtype
        clock = g.max_clock_mhz if dtype == "fp32" and g.max_clock_mhz else g.tensor_clock_mhz
        assert specs.tensor_peak_flop_per_s(g.sm_count, clock, per_clock) == pytest.approx(sheet, rel=0.015)
        checked += 1
    assert checked >= 2


def test_fp32_tf32_and_int8_have_their_own_rates_not_bf16s():
    assert [specs.arch_flop_per_clock_per_sm("sm90", d) for d in ("fp32", "tf32", "bf16", "int8")] == [
        256,
        2048,
        4096,
        8192,
    ]
    assert specs.arch_flop_per_clock_per_sm("sm70", "bf16") is None  # Volta: no bf16 units
    assert specs.get("h20").flop_per_clock_per_sm("bf16") is None  # capped part: no peak-at-clock claim


def test_capacities_are_binary_and_pcie_and_nvlink_rates_come_from_the_database():
    assert specs.get("h100-sxm5-80gb").memory_bytes == 80 * 2**30
    assert specs.pcie_bytes_per_s_per_direction(5) == 63e9
    assert specs.pcie_bytes_per_s_per_direction(4, width=8) == 15.75e9
    assert specs.nvlink_bytes_per_s_per_direction(4, links=18) == 450e9
    assert specs.pcie_bytes_per_s_per_direction(9) is None
