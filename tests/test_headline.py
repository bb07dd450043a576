"""Headline names: made and parsed by one type; the names of gpuprobe.run/1 stay as they were."""

from __future__ import annotations

import pytest

from analysis.headline import Headline, dtype_family, headlines


@pytest.mark.parametrize(
    ("h", "name", "resource", "dtype"),
    [
        (Headline.dram("copy", "torch"), "dram_copy_torch", "memory", None),
        (Headline.dram("triad", "triton"), "dram_triad_triton", "memory", None),
        (Headline.matmul_peak("bf16", "torch"), "matmul_peak_bf16_torch", "bf16", "bf16"),
        (
            Headline.matmul_peak("fp8_e4m3_rowwise", "triton"),
            "matmul_peak_fp8_e4m3_rowwise_triton",
            "fp8",
            "fp8_e4m3_rowwise",
        ),
        (Headline.busbw("all_reduce", "bf16"), "all_reduce_busbw_bf16", "link", "bf16"),
        (Headline.busbw("reduce_scatter", "fp32"), "reduce_scatter_busbw_fp32", "link", "fp32"),
        (Headline.host_link("bidir", "pinned"), "host_link_bidir_pinned", "host", None),
    ],
)
def test_names_round_trip(h, name, resource, dtype):
    assert str(h) == name
    assert Headline.parse(name) == h
    assert h.resource == resource and h.dtype == dtype


def test_family_of_a_dtype_key():
    assert dtype_family("fp8_e4m3_rowwise") == "fp8" and dtype_family("bf16") == "bf16"
    assert Headline.matmul_peak("fp8_e5m2", "torch").family == "fp8"
    assert Headline.dram("copy", "torch").family is None


@pytest.mark.parametrize("name", ["", "dram", "dram_copy", "matmul_peak_", "_busbw_bf16", "tokens_per_s"])
def test_names_outside_the_scheme_are_refused(name):
    with pytest.raises(ValueError, match="not a gpuprobe headline name"):
        Headline.parse(name)
    assert Headline.try_parse(name) is None


def test_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="unknown headline metric"):
        Headline("bogus", "x", "y")


def test_headlines_picks_summary_rows_by_metric():
    summary = [{"name": "dram_copy_torch"}, {"name": "matmul_peak_bf16_torch"}, {"name": "odd"}]
    assert [h.metric for h, _ in headlines(summary)] == ["dram", "matmul_peak"]
    assert [s["name"] for _, s in headlines(summary, "matmul_peak")] == ["matmul_peak_bf16_torch"]
