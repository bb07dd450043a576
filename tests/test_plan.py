"""`python -m analysis plan` (analysis/plan.py, plan_cli.py, plan_report.py): the cheapest GPU, format, TP and batch
under latency targets; every rejection in words; bad inputs one line and exit 2; the report in a real browser."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from helpers import cli, h100_doc

from analysis import decode
from analysis.__main__ import main as analysis_main
from analysis.plan import Targets
from analysis.rundoc import write_atomic

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
BASE = ["plan", "--model", "llama-3.1-70b", "--input-len", "512", "--output-len", "128"]
TARGETS = ["--ttft-ms", "1000", "--tpot-ms", "50"]


def plan_json(capsys, *argv: str) -> dict:
    assert analysis_main([*BASE, *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_issues_command_works_as_written(tmp_path, capsys):
    run = write_atomic(h100_doc(), tmp_path / "RUN.json")
    out = tmp_path / "plan"
    argv = [*BASE, *TARGETS, "--candidate", "l40s:fp8:0.72", "--candidate", "a100-sxm4-80gb:bf16:1.64"]
    argv += ["--candidate", "a100-sxm4-80gb:bf16:0.45:spot", "--candidate", "h100-sxm5-80gb:fp8:2.49"]
    argv += ["--candidate", f"{run}:bf16:1.10", "-o", str(out)]
    assert analysis_main(argv) == 0
    text = capsys.readouterr().out
    assert "cheapest first" in text and "assumption: TTFT = one running decode step" in text
    for name in ("plan.json", "plan_frontier.png", "plan.md", "plan.html"):
        assert (out / name).stat().st_size > 0
    assert (out / "plan_frontier.png").read_bytes()[:4] == b"\x89PNG"
    doc = json.loads((out / "plan.json").read_text())
    ranked = doc["ranked"]
    costs = [r["operating_point"]["cost_per_million_output_tokens"] for r in ranked]
    assert costs == sorted(costs) and len(ranked) >= 4
    # the same A100 is cheaper on the spot market, at the same operating point
    a100 = {r["market"]: r for r in ranked if r["gpu"] == "a100-sxm4-80gb"}
    assert a100["spot"]["operating_point"]["batch"] == a100["on-demand"]["operating_point"]["batch"]
    ratio = (
        a100["spot"]["operating_point"]["cost_per_million_output_tokens"]
        / a100["on-demand"]["operating_point"]["cost_per_million_output_tokens"]
    )
    assert ratio == pytest.approx(0.45 / 1.64)
    for r in ranked:  # every operating point meets both targets
        assert r["operating_point"]["ttft_ms"] <= 1000 and r["operating_point"]["tpot_ms"] <= 50
        assert r["band"] is None or r["band"]["output_tokens_per_s_per_gpu_p10"] > 0


def test_the_operating_point_is_the_largest_batch_that_meets_the_targets(capsys):
    doc = plan_json(capsys, *TARGETS, "--candidate", "h100-sxm5-80gb:fp8:2.49", "--tp", "2")
    (opt,) = doc["ranked"]
    best = opt["operating_point"]
    assert opt["limited_by"] == "TPOT target"
    from analysis import engines, hardware, specs
    from analysis.models import load_model
    from analysis.plan import Workload, point, query

    w = Workload(load_model("llama-3.1-70b"), 512, 128, engines.resolve())
    q = query(w, "fp8", 2, 2.49)
    hw = hardware.profile_from_spec(specs.get("h100-sxm5-80gb"))
    t = Targets(ttft_s=1.0, tpot_s=0.05)
    assert point(hw, q, best["batch"]).meets(t) and not point(hw, q, best["batch"] + 1).meets(t)
    # TPOT = step + the replacing prompts' prefill spread over the output; TTFT = a step + one prefill
    p = point(hw, q, best["batch"])
    assert p.tpot_s == pytest.approx(p.step_s + decode.prefill_s(hw, q, best["batch"]) / 128)
    assert p.ttft_s == pytest.approx(p.step_s + decode.prefill_s(hw, q, 1))
    assert best["cost_per_million_output_tokens"] == pytest.approx(
        decode.cost_per_million_tokens(2.49, 2, best["output_tokens_per_s"])
    )


def test_every_rejection_is_explained_in_words(capsys):
    doc = plan_json(capsys, "--tpot-ms", "20", "--candidate", "l40s:fp8:0.72", "--tp", "2")
    assert doc["ranked"] == []
    (why,) = [r["why_not"] for r in doc["rejected"]]
    assert why.startswith("TPOT ") and "at batch 1 > 20 ms: weights alone need" in why and "TB/s" in why
    doc = plan_json(capsys, "--ttft-ms", "10", "--candidate", "h100-sxm5-80gb:fp8:2.49")
    why = doc["rejected"][0]["why_not"]
    assert "TTFT" in why and "512-token prompt needs" in why and "TFLOPS (fp8)" in why


def test_a_candidate_that_fits_no_tp_size_is_listed_not_dropped(capsys):
    doc = plan_json(
        capsys, *TARGETS, "--candidate", "l4:fp8:0.30", "--candidate", "h200-sxm-141gb:fp8:3.5", "--tp", "1,2"
    )
    unfit = doc["fits_no_tp"]
    assert [u["candidate"] for u in unfit] == ["l4:fp8:0.30"] and "fits no TP size up to 2" in unfit[0]["why"]
    assert "GB of weights" in unfit[0]["why"]
    assert doc["ranked"][0]["gpu"] == "h200-sxm-141gb"


def test_a_format_less_candidate_tries_every_format_the_gpu_runs(capsys):
    doc = plan_json(capsys, *TARGETS, "--candidate", "a100-sxm4-80gb:1.64", "--candidate", "l40s:0.72")
    tried = {(o["gpu"], o["format"]) for o in doc["options"]}
    assert ("a100-sxm4-80gb", "fp8") not in tried  # no FP8 tensor cores on sm_80
    assert {("a100-sxm4-80gb", "bf16"), ("a100-sxm4-80gb", "int4-wo"), ("l40s", "fp8")} <= tried


def test_the_buying_guides_cost_arithmetic():
    """The L40S-vs-A100 guide prices 2 GPUs' throughput per hour (DESIGN.md): 2 x L40S at $0.72 and 800 tok/s
    -> $0.50 per million; 2 x A100 80GB at $1.64 and 500 tok/s -> $1.82; at the $0.45 spot price -> $0.50."""
    assert decode.cost_per_million_tokens(0.72, 2, 800) == pytest.approx(0.50, abs=0.005)
    assert decode.cost_per_million_tokens(1.64, 2, 500) == pytest.approx(1.82, abs=0.005)
    assert decode.cost_per_million_tokens(0.45, 2, 500) == pytest.approx(0.50, abs=0.005)


def test_the_guides_rows_beside_our_projection_and_why(capsys):
    """The guide's setups (2 x L40S FP8, 2 x A100 80GB BF16 on-demand and spot; Llama 3.1 70B) at batch 8 and
    32: `--batch` prints our projection of the same rows with what bounds the step and how it splits, to set
    beside the guide's table (its 800 and 500 tok/s price to $0.50 and $1.82 per million above)."""
    argv = ["--candidate", "l40s:fp8:0.72", "--candidate", "a100-sxm4-80gb:bf16:1.64"]
    doc = plan_json(
        capsys, *argv, "--candidate", "a100-sxm4-80gb:bf16:0.45:spot", "--tp", "2", "--batch", "8,32"
    )
    rows = doc["at_batches"]
    assert [(r["option"].split()[0], r["batch"]) for r in rows] == [
        (gpu, b) for gpu in ("l40s", "a100-sxm4-80gb", "a100-sxm4-80gb") for b in (8, 32)
    ]
    for r in rows:
        assert sum(r["split"].values()) == pytest.approx(1.0) and r["bound"] in ("memory", "compute")
        assert r["output_tokens_per_s"] == pytest.approx(r["batch"] / (r["tpot_ms"] / 1e3))
    spot, od = rows[4], rows[2]
    assert spot["cost_per_million_output_tokens"] == pytest.approx(
        od["cost_per_million_output_tokens"] * 0.45 / 1.64
    )
    assert analysis_main([*BASE, *argv, "--tp", "2", "--batch", "8,32"]) == 0
    assert "every option at the asked batches" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--ttft-ms", "0", "--candidate", "l40s:fp8:0.72"], "--ttft-ms 0: a latency target must be"),
        (["--tpot-ms", "-5", "--candidate", "l40s:fp8:0.72"], "--tpot-ms -5: a latency target must be"),
        (["--tokens-per-s-per-user", "nan", "--candidate", "l40s:fp8:0.72"], "a latency target must be"),
        (["--candidate", "l40s:fp8:inf"], "price per GPU-hour must be a finite number"),
        (["--candidate", "l40s:fp8:nan"], "price per GPU-hour must be a finite number"),
        (["--candidate", "l40s:fp8:cheap"], "price 'cheap' per GPU-hour is not a number"),
        (["--candidate", "a100-sxm4-80gb:fp8:1.64"], "has no FP8 tensor-core rate"),
        (["--candidate", "l40s:fp9:0.72"], "format 'fp9'"),
        (["--candidate", "l40s:fp8:0.72:weekly"], "market 'weekly'"),
        (["--candidate", "nosuchgpu:fp8:0.72"], "nosuchgpu"),
        (["--candidate", "l4:bf16:0.3", "--tp", "1"], "fits no candidate at TP up to 1"),
        (["--candidate", "l40s:fp8:0.72", "--tp", "0"], "argument --tp: '0': every value must be at least 1"),
        (["--candidate", "l40s:fp8:0.72", "--engine", "nosuch"], "nosuch"),
    ],
)
def test_bad_plan_input_is_one_line_and_exit_2(capsys, extra, expected):
    assert cli(analysis_main, [*BASE, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1, err


@pytest.mark.skipif(BROWSER is None, reason="no headless browser (chromium) installed; .ci/run installs it")
def test_the_plan_report_renders_in_a_real_headless_browser(tmp_path, capsys):
    out = tmp_path / "plan"
    argv = [*BASE, *TARGETS, "--candidate", "l40s:fp8:0.72", "--candidate", "h100-sxm5-80gb:fp8:2.49"]
    assert analysis_main([*argv, "-o", str(out)]) == 0
    url = (out / "plan.html").as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1400"]
    dom = subprocess.run(
        [BROWSER, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
    ).stdout
    assert "Cheapest first" in dom and "h100-sxm5-80gb $2.49/h" in dom and "Assumptions" in dom
    assert 'src="data:image/png;base64,' in dom
    md = (out / "plan.md").read_text()
    assert "## Cheapest first" in md and "![plan_frontier](plan_frontier.png)" in md


def test_electricity_adds_the_gpus_power_to_each_gpu_hour(capsys):
    base = plan_json(capsys, *TARGETS, "--candidate", "h100-sxm5-80gb:fp8:2.49", "--tp", "2")
    powered = plan_json(
        capsys,
        *TARGETS,
        "--candidate",
        "h100-sxm5-80gb:fp8:2.49",
        "--tp",
        "2",
        "--electricity-usd-per-kwh",
        "0.12",
    )
    (a,), (b,) = base["ranked"], powered["ranked"]
    assert b["power_w"] == 700 and b["electricity_per_gpu_hour"] == pytest.approx(
        0.7 * 0.12
    )  # the sheet's TDP
    ratio = (
        b["operating_point"]["cost_per_million_output_tokens"]
        / a["operating_point"]["cost_per_million_output_tokens"]
    )
    assert ratio == pytest.approx((2.49 + 0.084) / 2.49)
    assert cli(analysis_main, [*BASE, "--candidate", "l40s:fp8:0.72", "--electricity-usd-per-kwh", "-1"]) == 2
