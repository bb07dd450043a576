"""Verdicts against the sheet and good nodes, with the card's own explanation."""

from __future__ import annotations

import pytest
from helpers import h100_doc

from analysis import verdicts


def test_verdicts_against_good_nodes_of_the_sku():
    vs = {v.figure: v for v in verdicts.validate(h100_doc())}
    assert vs["dram_copy_torch"].verdict == "pass" and vs["dram_copy_torch"].spec == 3.35e12
    assert vs["dram_copy_torch"].good == pytest.approx(3.0e12)
    assert "5120-bit bus x 2619 MHz -> 3352 GB/s theoretical" in vs["dram_copy_torch"].note
    bf16 = vs["matmul_peak_bf16_torch"]
    assert bf16.verdict == "warn" and bf16.good == pytest.approx(794e12)  # 650 / 794 = 82 %
    assert (
        "held 1650 MHz (sw_power_cap): 132 SMs x 1650 MHz x 4096 FLOP/clk = 892 TF at that clock" in bf16.note
    )
    assert vs["matmul_peak_fp8_e4m3_torch"].verdict == "fail"  # 700 of the ~1400 good nodes reach
    ar = vs["all_reduce_busbw_bf16"]
    assert ar.spec == 450e9 and ar.verdict == "pass"  # NVLink 4: 450 GB/s per direction


def test_unknown_sku_and_cpu_runs_get_no_verdict():
    vs = verdicts.validate(h100_doc("NVIDIA GH200 480GB"))  # not an H200 (issue 12)
    assert all(v.verdict == "no verdict" and "unknown SKU" in v.note for v in vs)
    cpu = h100_doc()
    cpu["devices"][0]["kind"] = "cpu"
    assert all("CPU figures" in v.note for v in verdicts.validate(cpu))


def _busbw(doc: dict) -> verdicts.Verdict:
    return next(v for v in verdicts.validate(doc) if v.figure == "all_reduce_busbw_bf16")


def test_a_collective_is_judged_against_the_link_it_travelled():
    ar = _busbw(h100_doc())
    assert ar.spec == 450e9 and ar.note.startswith("over NVLink 4: 450.0 GB/s per direction")
    # a healthy 8x H100 PCIe node: judged against its PCIe Gen5 x16, not an NVLink it does not have
    pcie = h100_doc("NVIDIA H100 PCIe")
    pcie["devices"][0]["nvml"].update(pcie_gen_max=5, pcie_width_max=16)
    pcie["measurements"][-1]["params"]["link"] = "PCIe via PCIe host bridge"
    pcie["summary"][-1]["value"] = 52e9
    ar = _busbw(pcie)
    assert ar.spec == 63e9 and ar.verdict == "pass" and "over PCIe Gen5 x16" in ar.note
    # the same node with a link trained to x8 is judged against the card's x16: a shortfall shows
    pcie["summary"][-1]["value"] = 27e9
    assert _busbw(pcie).verdict == "fail"


def test_a_multi_node_or_unknown_link_gets_no_verdict_against_a_gpu_sheet():
    doc = h100_doc()
    doc["measurements"][-1]["params"]["world_size"] = 16  # 2 nodes of 8 under torchrun
    ar = _busbw(doc)
    assert ar.verdict == "no verdict" and "the network" in ar.note
    doc = h100_doc()
    doc["measurements"][-1]["params"]["link"] = "unknown (NVML not available)"
    ar = _busbw(doc)
    assert ar.verdict == "no verdict" and "unknown link" in ar.note
    # the launcher says how many nodes: 2 is the network, 1 is this node's NVLink even where the rank that
    # wrote the document saw one GPU (srun --gpus-per-task)
    doc = h100_doc()
    doc["measurements"][-1]["params"].update(world_size=16, nodes=2)
    assert "the network (2 nodes)" in _busbw(doc).note
    doc = h100_doc()
    doc["measurements"][-1]["params"].update(world_size=8, nodes=1)
    doc["host"]["cuda_devices"] = 1
    ar = _busbw(doc)
    assert ar.spec == 450e9 and "NVLink 4" in ar.note and "network" not in ar.note


def test_a_task_that_sees_only_its_own_gpu_uses_cuda_0_and_the_nodes_are_counted():
    from probes.ranks import gpu_index
    from probes.torchrun import nodes_spanned

    assert gpu_index(3, 8) == 3 and gpu_index(3, 1) == 0 and gpu_index(5, 2) == 1 and gpu_index(2, 0) == 2
    assert nodes_spanned(16, {"LOCAL_WORLD_SIZE": "8"}) == 2
    assert nodes_spanned(8, {"SLURM_STEP_NUM_NODES": "1"}) == 1 and nodes_spanned(8, {}) is None


def test_per_op_overheads_are_never_judged_against_a_link():
    """Seconds per launched op have no sheet figure: no verdict (they used to fall through to the host-link
    branch and read as a PCIe bandwidth far below the sheet: a red "fail" in every GPU report)."""
    doc = h100_doc()
    for mode, value in (("eager", 7e-6), ("graph", 1.3e-6)):
        doc["summary"].append(
            {
                "probe": "decode",
                "name": f"op_overhead_{mode}_torch",
                "device": doc["summary"][0]["device"],
                "value": value,
                "unit": "seconds",
                "min": value,
                "max": value,
                "n_cases": 1,
                "max_cv": 0.05,
            }
        )
    vs = {v.figure: v for v in verdicts.validate(doc)}
    for mode in ("eager", "graph"):
        v = vs[f"op_overhead_{mode}_torch"]
        assert v.verdict == "no verdict" and v.spec is None and "no sheet figure" in v.note


def test_nvls_all_reduce_above_the_link_rate_is_healthy():
    """8x H100 with NVLink SHARP: 480 GB/s busbw over a 450 GB/s per-direction NVLink is a pass, said why."""
    doc = h100_doc()
    ar_row = next(s for s in doc["summary"] if s["name"] == "all_reduce_busbw_bf16")
    ar_row["value"] = 480e9
    ar = _busbw(doc)
    assert ar.verdict == "pass" and ar.ratio > 1 and "NVLS" in ar.note


@pytest.mark.parametrize(
    ("name", "figure", "value", "verdict"),
    [
        ("AMD Instinct MI300X", "matmul_peak_fp8_e4m3_torch", 1273e12, "pass"),  # 0.95 of the good figure
        ("NVIDIA B200", "matmul_peak_bf16_torch", 1745e12, "pass"),
        ("NVIDIA H200", "matmul_peak_bf16_torch", 780e12, "pass"),
        ("NVIDIA GB200", "matmul_peak_bf16_torch", 1822e12, "no verdict"),  # not judged as a B200
    ],
)
def test_good_node_figures_of_the_sheets_renters_now_use(name, figure, value, verdict):
    doc = h100_doc(name)
    next(s for s in doc["summary"] if s["name"] == figure)["value"] = value
    v = next(v for v in verdicts.validate(doc) if v.figure == figure)
    assert v.verdict == verdict, (v.verdict, v.note)
