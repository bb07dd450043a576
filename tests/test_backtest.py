"""The projection against published decode measurements: the rows, the halves, the engines, the summaries, the
bands, the command."""

from __future__ import annotations

import math

import pytest

from analysis import backtest as bt
from analysis.__main__ import main as analysis_main

HEADER = "id,source,framework,gpu,gpus,tp,model,weights,group_size,kv_dtype,batch,input_len,output_len,metric,value,value_per,cuda_graphs,quote,notes\n"


def test_bundled_rows_load_with_sources_and_split_in_two_halves():
    rows = bt.load_rows()
    assert len(rows) >= 200 and len({r.id for r in rows}) == len(rows)
    assert all(r.source for r in rows)
    # at least 15 sources (an address before its commit / revision note)
    assert len({r.source.split(" @")[0].split(",")[0].split(" (")[0] for r in rows}) >= 15
    halves = {r.half for r in rows}
    assert halves == {"fit", "holdout"}
    assert abs(sum(r.half == "fit" for r in rows) - len(rows) / 2) < len(rows) / 5
    assert {r.weights for r in rows} >= {"bf16", "fp8", "int8-wo", "int4-wo"}
    assert {r.tp for r in rows} >= {1, 2, 4, 8}


def test_per_gpu_values_are_scaled_to_the_whole_and_engines_get_their_launch_mode(tmp_path):
    p = tmp_path / "rows.csv"
    p.write_text(
        HEADER
        + "a,src,trtllm,h100-sxm5-80gb,2,2,llama-2-70b,fp8,,fp8,64,128,128,output_tok_s,100,gpu,unknown,q,n\n"
        + "b,src,llama.cpp,rtx-4090,1,1,llama-2-7b,fp16,,,1,0,128,per_seq_tok_s,60,total,no,q,n\n"
        + "c,src,vllm,a100-pcie-80gb,2,2,llama-2-70b,fp16,,,1,7,256,per_seq_tok_s,15,total,no,q,n\n"
        + "d,src,other,a100-pcie-80gb,2,2,llama-2-70b,fp16,,,1,7,256,per_seq_tok_s,15,total,unknown,q,n\n"
        + "e,src,nim,h100-sxm5-80gb,2,2,llama-2-70b,fp8,,fp8,1,128,128,per_seq_tok_s,50,total,yes,q,n\n"
    )
    a, b, c, d, e = bt.load_rows(p)
    assert a.value == 200 and a.engine == "trtllm" and a.launch == "native"  # a C++ runtime
    assert b.launch == "native" and c.launch == "eager"  # cuda_graphs = no: without graphs
    assert d.engine is None and d.engine_class == bt.NO_ENGINE_CLASS and d.launch == "graph"  # the default
    assert e.engine == "trtllm" and e.launch == "graph"  # an alias; cuda_graphs = yes


def test_versions_select_the_engine_profile_and_time_metrics_invert_the_ratio(tmp_path):
    header = HEADER.replace("framework,", "framework,engine_version,")
    p = tmp_path / "rows.csv"
    p.write_text(
        header
        + "old,src,vllm,0.5.3,h100-sxm5-80gb,1,1,llama-3.1-8b,bf16,,,1,128,128,tpot_ms,12,total,yes,q,n\n"
        + "new,src,vllm,0.10.0,h100-sxm5-80gb,1,1,llama-3.1-8b,bf16,,,1,128,128,tpot_ms,12,total,yes,q,n\n"
        + "srv,src,vllm,0.10.0,h100-sxm5-80gb,1,1,llama-3.1-8b,bf16,,,16,2048,128,serving_tpot_ms,12,total,yes,q,n\n"
        + "dec,src,vllm,0.10.0,h100-sxm5-80gb,1,1,llama-3.1-8b,bf16,,,16,2048,128,decode_tok_s,1000,total,yes,q,n\n"
    )
    old, new, srv, dec = bt.backtest(bt.load_rows(p))
    # vLLM 0.5's host time per step (4 ms + 0.1 ms per sequence) makes its step slower than V1's
    assert old["projected"] > new["projected"] + 3.0
    # a time: the ratio is published / projected, so > 1 still means the projection is optimistic
    assert new["ratio"] == pytest.approx(12 / new["projected"])
    # under continuous load the other requests' prefills stretch every stream's TPOT
    assert srv["projected"] > 1000 * 16 / dec["projected"]


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("x,src,vllm,h100-sxm5-80gb,1,1,llama-3.1-8b,bf16,,,1,1,1,tok_s,5,total,yes,q,n", "metric"),
        (
            "x,src,vllm,h100-sxm5-80gb,1,1,llama-3.1-8b,bf16,,,1,1,1,per_seq_tok_s,-5,total,yes,q,n",
            "positive",
        ),
        (
            "x,,vllm,h100-sxm5-80gb,1,1,llama-3.1-8b,bf16,,,1,1,1,per_seq_tok_s,5,total,yes,q,n",
            "missing source",
        ),
        (
            "x,src,vllm,h100-sxm5-80gb,1,one,llama-3.1-8b,bf16,,,1,1,1,per_seq_tok_s,5,total,yes,q,n",
            "invalid",
        ),
        (
            "x,src,vllm,h100-sxm5-80gb,1,1,llama-3.1-8b,bf16,,,1,1,1,per_seq_tok_s,5,total,yes,q,n\n"
            "x,src,vllm,h100-sxm5-80gb,1,1,llama-3.1-8b,bf16,,,1,1,1,per_seq_tok_s,6,total,yes,q,n",
            "appears twice",
        ),
    ],
)
def test_a_bad_row_is_named_in_one_line(tmp_path, line, why):
    p = tmp_path / "bad.csv"
    p.write_text(HEADER + line + "\n")
    with pytest.raises(bt.BacktestError, match=why):
        bt.load_rows(p)


def test_summary_arithmetic():
    res = [{"ratio": 2.0}, {"ratio": 0.5}, {"ratio": 1.1}, {"error": "x"}]
    s = bt.summary(res)
    assert s["rows"] == 3 and s["geomean_ratio"] == pytest.approx(math.exp(math.log(1.1) / 3))
    assert s["median_abs_error"] == pytest.approx(0.5) and s["beyond_2x"] == 0
    assert s["within_25pct"] == pytest.approx(1 / 3) and s["worst_ratio"] in (2.0, 0.5)


def test_the_spec_projection_holds_on_the_held_out_half():
    """A regression guard on the published set: the held-out half (no parameter was fitted to it), asked with
    each source's engine, and asked with no engine at all (the default), as issue 21's closing note reports."""
    holdout = [r for r in bt.load_rows() if r.half == "holdout"]
    res = bt.backtest(holdout)
    assert not [r for r in res if "error" in r]
    s = bt.summary(res)
    assert s["median_abs_error"] <= 0.20 and 0.9 <= s["geomean_ratio"] <= 1.15, s
    assert s["beyond_2x"] <= 0.06 * s["rows"], s
    default = bt.summary(bt.backtest(holdout, with_engine=False))
    assert default["median_abs_error"] <= 0.30, default


def test_breakdowns_keep_the_halves_apart_and_bands_come_from_the_held_out_rows():
    res = bt.backtest(bt.load_rows())
    table = bt.breakdown(res, "engine")
    assert {name for name, _, _ in table} >= {"vllm", "trtllm", "llama.cpp", "hf-transformers"}
    for name, fit, hold in table:
        n = sum(1 for r in res if (r["row"].engine or bt.NO_ENGINE_CLASS) == name and "ratio" in r)
        assert fit["rows"] + hold["rows"] == n
    from analysis import engines

    band = bt.band(engines.resolve("vllm"), 1)
    assert band is not None and band.rows >= bt.BAND_MIN_ROWS and band.low_ratio <= 1 <= band.high_ratio * 1.5
    lo, hi = band.range(100.0)
    assert lo == pytest.approx(100 / band.high_ratio) and hi == pytest.approx(100 / band.low_ratio)
    # an engine class without published rows carries no band, and says so
    import dataclasses

    lonely = dataclasses.replace(engines.resolve("lmdeploy"), engine_class="nothing published")
    assert bt.band(lonely, 1) is None
    (row,) = bt.with_band([{"batch": 1, "output_tokens_per_s": 10.0}], lonely)
    assert row["band"] is None and "the band is unknown" in row["band_note"]


def test_the_command_prints_rows_and_summaries(capsys, tmp_path):
    assert analysis_main(["backtest", "--half", "holdout", "--rows"]) == 0
    out = capsys.readouterr().out
    assert "holdout" in out and "median |error|" in out and "with no engine named" in out
    for by in ("By engine", "By GPU vendor", "By weight format", "By batch regime"):
        assert by in out
    assert analysis_main(["backtest", "--csv", str(tmp_path / "missing.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
