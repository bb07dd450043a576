"""Serving-engine profiles: names, versions, sources, and what each profile does to a decode step."""

from __future__ import annotations

import dataclasses
import json

import pytest
from helpers import cli

from analysis import decode, engines, formats, hardware, specs
from analysis.__main__ import main as analysis_main
from analysis.models import load_model

H100 = hardware.profile_from_spec(specs.get("h100-sxm5-80gb"))


def step(engine: str, model: str = "llama-3.1-8b", batch: int = 1, hw=H100, **kw) -> decode.Step:
    q = formats.Query(load_model(model), engine=engines.resolve(engine), **kw)
    return decode.decode_step(hw, q, batch, 1024)


def test_every_profile_resolves_and_every_host_figure_names_its_source():
    raw = engines._raw()
    assert raw["default"] in raw["engines"]
    for key, e in raw["engines"].items():
        assert e["launch"] in engines.LAUNCH_MODES and e["class"] and e["name"]
        assert e["host"], key
        for h in e["host"]:
            assert len(h["source"]) > 20, (key, h["versions"])  # a source, not a placeholder
        for fmt, kernel in e.get("gemm", {}).items():
            assert fmt in engines.gemm_kernels()[kernel].formats
        resolved = engines.resolve(key)
        assert resolved.key == key and resolved.version is None
    for k in engines.gemm_kernels().values():
        assert all(0 < f <= 1.1 for f in k.fraction.values()) and 1 in k.fraction


def test_names_aliases_and_versions():
    assert engines.resolve("TensorRT-LLM").key == "trtllm" and engines.resolve("nim").key == "trtllm"
    assert (
        engines.resolve("torchao").key == "gpt-fast"
        and engines.resolve("Transformers").key == "hf-transformers"
    )
    assert engines.resolve().key == engines.default_engine() == "vllm"
    assert engines.resolve().launch == "graph"  # what capacity planners run: a graph-capturing engine
    old = engines.resolve("vllm@0.5.3")
    assert (
        old.version == "0.5.3"
        and old.host_step_s == pytest.approx(4e-3)
        and old.kernel("int4-wo") == "awq-gemm"
    )
    assert engines.resolve("vllm", "0.6.3.dev116+g151ef4ef").host_step_s < old.host_step_s
    assert (
        engines.resolve("vllm==0.10.1").host_step_s < 1e-3
        and engines.resolve("vllm:0.10.1").version == "0.10.1"
    )
    assert engines.resolve("sglang@0.4.1").overlap and not engines.resolve("sglang@0.3.6").overlap
    assert engines.resolve("tgi@1.0.3").launch == "eager" and engines.resolve("tgi@2.3").launch == "graph"
    assert engines.parse_version("v0.4.1") == (0, 4, 1) and engines.parse_version("b2824") == (2824,)
    assert engines._matches((0, 6), ">=0.6,<0.8") and not engines._matches((0, 8, 1), ">=0.6,<0.8")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("vlm", "unknown engine; known: vllm"),
        ("vllm@abc", "expected digits and dots"),
        ("", "unknown engine"),
    ],
)
def test_bad_engine_names_and_versions_are_one_line(name, why):
    with pytest.raises(engines.EngineError, match=why):
        engines.resolve(name)


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["--engine", "vlm"], "--engine 'vlm': unknown engine"),
        (["--engine", "vllm@x.y"], "engine version 'x.y'"),
        (["--engine-version", "0.5.3"], "--engine-version needs --engine"),
        (["--engine", "vllm", "--launch", "warp"], "'warp'"),
    ],
)
def test_the_command_refuses_bad_engines_in_one_line(capsys, args, msg):
    rc = cli(analysis_main, ["project", "--gpu", "h100-sxm5-80gb", "--model", "llama-3.1-8b", *args])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1


def test_the_command_names_the_engine_band_and_split_in_every_row(capsys):
    argv = ["project", "--gpu", "h100-sxm5-80gb", "--model", "llama-3.1-8b", "--batch", "1,64"]
    assert analysis_main([*argv, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["engine"] for r in rows] == ["vllm", "vllm"]
    for r in rows:
        parts = ("weights", "kv", "compute", "overhead", "communication", "host")
        assert sum(r[f"{p}_seconds"] for p in parts) == pytest.approx(r["step_seconds"])
        lo, hi = r["band"]["output_tokens_per_s_p10"], r["band"]["output_tokens_per_s_p90"]
        assert lo < hi and "held-out published rows" in r["band_note"]
    assert analysis_main([*argv, "--engine", "vllm@0.5.3"]) == 0
    out = capsys.readouterr().out
    assert "vllm@0.5.3" in out and "band:" in out and "host 4.00 ms" in out and "6854" in out


def test_host_time_is_added_or_hidden_as_the_engine_runs_it():
    v05, v1 = step("vllm@0.5.3"), step("vllm@0.10.0")
    assert v05.host_s == pytest.approx(4.1e-3) and v05.seconds - v1.seconds == pytest.approx(
        v05.host_s - v1.host_s
    )
    # SGLang's overlap scheduler: its host time hides behind the kernels; only what outlasts them shows
    assert step("sglang@0.4.1", "llama-3.1-70b").host_s == 0
    slow_host = dataclasses.replace(engines.resolve("sglang@0.4.1"), host_step_s=5e-3)
    q = formats.Query(load_model("llama-3.2-1b"), engine=slow_host)
    s = decode.decode_step(H100, q, 1, 1024)
    assert s.seconds == pytest.approx(5e-3 + 0.01e-3) and 0 < s.host_s < 5e-3
    # the ideal profile (the physical bound) has no host time
    ideal = hardware.profile_from_spec(specs.get("h100-sxm5-80gb"), ideal=True)
    assert step("vllm@0.5.3", hw=ideal).host_s == 0
    # V0 broadcast each step to its workers: the host grows with TP
    tp4 = step("vllm@0.5.3", "llama-3.1-70b", tp=4)
    assert tp4.host_s == pytest.approx(4.1e-3 + 3 * 2.5e-3)


def test_kernels_fusion_and_launches_follow_the_engine():
    # llama.cpp launches q, k, v and gate, up apart: more GEMM latencies than a fused engine's
    split = decode.engine_linears(load_model("llama-3.1-8b"), 1, engines.resolve("llama.cpp"))
    fused = decode.engine_linears(load_model("llama-3.1-8b"), 1, engines.resolve("vllm"))
    assert [lin.op for lin in split][:5] == ["q", "k", "v", "o", "gate"] and len(split) == len(fused) + 3
    assert sum(lin.n for lin in split if lin.op in ("q", "k", "v")) == fused[0].n
    # int4 runs each engine's own kernel: Marlin beats vLLM's first AWQ kernel at batch 16
    marlin = step("vllm@0.10.0", batch=16, weight_dtype="int4-wo")
    awq = step("vllm@0.4.0", batch=16, weight_dtype="int4-wo")
    assert awq.weights_s > 1.1 * marlin.weights_s
    # dynamic fp8 activation scales cost one kernel per GEMM in vLLM, none in TensorRT-LLM's static scheme
    vllm_fp8 = step("vllm", weight_dtype="fp8")
    vllm_bf16 = step("vllm")
    assert vllm_fp8.overhead_s > vllm_bf16.overhead_s
    # HF eager: its own per-op cost (module calls) and ~40 small ops per layer make batch 1 host-bound
    hf = step("hf-transformers")
    assert hf.bound == "overhead" and hf.overhead_s > 5 * step("vllm").overhead_s


def test_custom_all_reduce_only_over_a_gpu_fabric():
    nvlink = step("vllm", "llama-3.1-70b", tp=4)
    nccl = step("gpt-fast", "llama-3.1-70b", tp=4)
    assert nvlink.comm_s < nccl.comm_s
    pcie = hardware.profile_from_spec(specs.get("l40s"))
    assert step("vllm", "llama-3.1-70b", tp=4, hw=pcie).comm_s == pytest.approx(
        step("gpt-fast", "llama-3.1-70b", tp=4, hw=pcie).comm_s
    )


def test_a_launch_override_keeps_the_engine_and_is_noted():
    e = engines.resolve("vllm").with_launch("eager")
    assert e.key == "vllm" and e.launch == "eager" and "launch overridden" in e.notes[0]
    with pytest.raises(engines.EngineError):
        engines.resolve("vllm").with_launch("warp")
    assert dataclasses.replace(e, version="1").label == "vllm@1"
