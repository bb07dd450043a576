"""The prefill / TTFT projection against published TTFT figures (analysis/ttft_backtest.py)."""

from __future__ import annotations

import json
import re

import pytest

from analysis import decode, formats, hardware, specs, ttft_backtest
from analysis.__main__ import main as analysis_main
from analysis.models import load_model

HIDDEN = re.compile(
    r"LLM-Inference-Bench|argonne-lcf|InternLM/lmdeploy|lmdeploy\.readthedocs|AutoAWQ|mit-han-lab/llm-awq|"
    r"rocm-blogs|rocm\.blogs|blog\.vllm|vllm-project\.github\.io|llama\.cpp/issues",
    re.I,
)


def test_every_row_has_its_source_and_a_configuration_we_can_project():
    rows = ttft_backtest.load_rows()
    assert len(rows) >= 40 and len({r.id for r in rows}) == len(rows)
    text = ttft_backtest.DATA.read_text()
    assert not HIDDEN.search(text)
    import csv

    for raw in csv.DictReader(ttft_backtest.DATA.open()):
        assert raw["url"].startswith("http") and raw["quote"] and raw["source"]
    assert {r.half for r in rows} == {"fit", "holdout"}


def test_the_held_out_dense_rows_of_a_compiled_engine_are_within_a_band():
    """The one fitted number (prefill_factor) came from the fit half; here the holdout half's dense-model
    TensorRT-LLM / NIM rows, one request at a time, are judged: median |error| under 20 %, none past 2x."""
    res = ttft_backtest.backtest(
        [
            r
            for r in ttft_backtest.load_rows()
            if r.half == "holdout" and r.engine in ("trtllm", "nim") and "mixtral" not in r.model
        ]
    )
    s = ttft_backtest.summary(res)
    assert s["rows"] >= 10 and s["median_abs_error"] < 0.20 and s["beyond_2x"] == 0, s


def test_an_moe_prompt_reads_every_expert_it_touches():
    """128 prompt tokens x 2 of Mixtral's 8 experts touch all 8: the prefill reads 8 experts' weights per layer,
    not 2 (the decode step's rule), so it cannot be faster than reading the whole model once."""
    hw = hardware.profile_from_spec(specs.get("h100-sxm5-80gb"))
    q = formats.Query(load_model("mixtral-8x7b"), "fp8", None, 2, 128, 1)
    floor = decode.weights_bytes_per_gpu(q) / hw.bandwidth_bytes_per_s
    assert decode.prefill_s(hw, q, 1) > floor


def test_the_command_prints_rows_and_summaries(capsys):
    assert analysis_main(["backtest", "--ttft", "--rows"]) == 0
    out = capsys.readouterr().out
    assert "TTFT backtest" in out and "trtllm-llama-2-7b-h100-sxm5-80gb-fp8-tp1-in128" in out
    assert analysis_main(["backtest", "--ttft", "--half", "holdout", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["half"] == "holdout" and r["projected_ms"] > 0 for r in rows)
    assert rows[0]["ratio"] == pytest.approx(rows[0]["ttft_ms"] / rows[0]["projected_ms"])
