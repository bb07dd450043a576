"""Decode projection: DESIGN.md's seed arithmetic, physical sanity, measured profiles, and bad inputs."""

from __future__ import annotations

import json

import pytest
from helpers import cli, make_doc

from analysis import decode, engines, formats, hardware, specs
from analysis.__main__ import main as analysis_main
from analysis.models import load_model, parameter_count
from analysis.rundoc import write_atomic


def test_seed_arithmetic_weight_read_floor_and_cost():
    assert decode.weight_read_floor_s(70e9, 864e9) == pytest.approx(0.081, abs=0.0005)  # FP8 70B on an L40S
    assert decode.weight_read_floor_s(140e9, 2039e9) == pytest.approx(
        0.069, abs=0.0005
    )  # BF16 70B on an A100
    assert decode.cost_per_million_tokens(0.72, 2, 800) == pytest.approx(0.50, abs=0.005)
    assert decode.cost_per_million_tokens(1.64, 2, 500) == pytest.approx(1.82, abs=0.005)


def q(model: str = "llama-3.1-70b", **kw) -> formats.Query:
    return formats.Query(load_model(model), **kw)


def test_batch_1_decode_is_memory_bound_and_never_beats_the_weight_floor():
    for key in ("h100-sxm5-80gb", "l40s", "a100-sxm4-80gb", "mi300x"):
        hw = hardware.profile_from_spec(specs.get(key), ideal=True)
        query = q("llama-3.1-8b", weight_dtype="bf16")
        (row,) = decode.project(hw, query, [1])
        floor = decode.weight_read_floor_s(parameter_count(query.model) * 2, hw.bandwidth_bytes_per_s)
        assert row["bound"] == "memory"
        # the embedding table is not read per step, so the step may sit just under the whole-model floor
        assert row["step_seconds"] >= 0.9 * floor


def test_ideal_is_the_upper_bound_and_batching_raises_throughput():
    spec = specs.get("h100-sxm5-80gb")
    ideal, real = hardware.profile_from_spec(spec, ideal=True), hardware.profile_from_spec(spec)
    query = q(weight_dtype="fp8", tp=2)
    a, b = decode.project(ideal, query, [1, 32]), decode.project(real, query, [1, 32])
    assert a[0]["output_tokens_per_s"] > b[0]["output_tokens_per_s"]
    assert b[1]["output_tokens_per_s"] > 10 * b[0]["output_tokens_per_s"]
    assert b[0]["communication_seconds"] > 0 and a[0]["kv_bytes_per_request"] == b[0]["kv_bytes_per_request"]


def test_kv_capacity_and_default_kv_dtype():
    query = q(weight_dtype="fp8", tp=2, input_len=1024, output_len=256)
    assert query.kv == "bf16"  # 8-bit weights keep a 16-bit cache unless told
    row = decode.project(hardware.profile_from_spec(specs.get("l40s")), query, [1, 64])
    assert row[0]["kv_bytes_per_request"] == pytest.approx(2 * 80 * 8 * 128 * 2 * 1280)
    assert row[0]["max_concurrency"] > 0 and row[0]["fits"] and not row[1]["fits"]


def test_moe_reads_only_the_experts_a_batch_touches():
    hw = hardware.profile_from_spec(specs.get("h100-sxm5-80gb"), ideal=True)
    one = decode.decode_step(hw, q("mixtral-8x7b", tp=2), 1, 1024)
    many = decode.decode_step(hw, q("mixtral-8x7b", tp=2), 64, 1024)
    assert many.weight_bytes > 3 * one.weight_bytes  # 2 of 8 experts at batch 1, all 8 at batch 64


def run_doc(tmp_path):
    doc = make_doc()
    doc["devices"] = [
        {"torch_device": "cuda:0", "name": "Test GPU", "kind": "gpu", "memory_total_bytes": 80e9}
    ]
    doc["summary"] = [
        {
            "probe": "bandwidth",
            "name": "dram_copy_torch",
            "device": "cuda:0",
            "value": 3.0e12,
            "unit": "bytes_per_s",
            "min": 0,
            "max": 0,
            "n_cases": 3,
            "max_cv": 0.01,
        },
        {
            "probe": "matmul",
            "name": "matmul_peak_bf16_torch",
            "device": "cuda:0",
            "value": 800e12,
            "unit": "flop_per_s",
            "min": 0,
            "max": 0,
            "n_cases": 1,
            "max_cv": 0.01,
        },
    ]
    doc["measurements"] = [
        {
            "probe": "matmul",
            "case": f"decode/m/qkv/bf16/M={m}",
            "device": "cuda:0",
            "status": "ok",
            "value": 1.0,
            "unit": "flop_per_s",
            "params": {
                "kind": "decode",
                "n": 6144,
                "k": 4096,
                "m": m,
                "dtype": "bf16",
                "variant": "torch",
                "flops": 2 * m * 6144 * 4096,
                "bytes_moved": 2 * (m * 4096 + 6144 * 4096 + m * 6144),
            },
            "timing": {"stats": {"median_s": t}},
            "headline": None,
        }
        for m, t in ((1, 40e-6), (64, 60e-6))
    ]
    return write_atomic(doc, tmp_path / "run.json")


def test_a_measured_profile_uses_the_run_and_its_decode_gemms(tmp_path):
    from analysis.rundoc import load

    hw = hardware.profile_from_run(load(run_doc(tmp_path)))
    assert hw.bandwidth_bytes_per_s == 3.0e12 and hw.compute("bf16") == 800e12
    query = q("llama-3.1-8b")
    t8, _memory_bound = decode.gemm_seconds(hw, 8, 6144, 4096, query)
    assert 40e-6 < t8 < 60e-6  # interpolated between the measured M = 1 and 64, not the roofline's 17 us
    assert decode.gemm_seconds(hw, 128, 6144, 4096, query)[0] != t8  # outside the sweep: the roofline


def test_cli_tables_and_json(capsys, tmp_path):
    assert (
        analysis_main(
            [
                "project",
                "--gpu",
                "l40s",
                "--model",
                "llama-3.1-70b",
                "--dtype",
                "fp8",
                "--tp",
                "2",
                "--batch",
                "1,8,32",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "llama-3.1-70b fp8 weights" in out and "memory" in out
    assert (
        analysis_main(
            [
                "project",
                "--run",
                str(run_doc(tmp_path)),
                "--model",
                "llama-3.1-8b",
                "--batch",
                "1,4",
                "--json",
                "--price-per-gpu-hour",
                "2",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    need = {
        "batch",
        "output_tokens_per_s",
        "total_tokens_per_s",
        "step_seconds",
        "ttft_seconds",
        "kv_bytes_per_request",
        "max_concurrency",
        "bound",
        "cost_per_million_output_tokens",
    }
    assert [r["batch"] for r in rows] == [1, 4] and need <= set(rows[0])
    assert rows[0]["cost_per_million_output_tokens"] > 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--gpu", "l40s", "--model", "gpt-17"], "unknown model 'gpt-17'"),
        (["--gpu", "h300", "--model", "llama-3.1-8b"], "unknown GPU key 'h300'"),
        (["--gpu", "l40s", "--model", "qwen2.5-0.5b", "--tp", "4"], "does not divide 14 attention heads"),
        (["--gpu", "l40s", "--model", "llama-3.1-8b", "--batch", "0,8"], "every value must be at least 1"),
        (["--gpu", "l40s", "--model", "llama-3.1-8b", "--batch", "one"], "'one' is not an integer"),
        (
            ["--gpu", "l40s", "--model", "llama-3.1-8b", "--batch", "1,,8"],
            "comma-separated positive integers",
        ),
        (["--gpu", "l40s", "--model", "llama-3.1-8b", "--batch", ""], "comma-separated positive integers"),
        (["--gpu", "l40s", "--model", "llama-3.1-8b", "--tp", "0"], "--tp: '0': must be at least 1"),
        (["--gpu", "l40s", "--model", "llama-3.1-8b", "--price-per-gpu-hour", "nan"], "must be a finite"),
        (["--gpu", "l40s", "--model", "llama-3.1-8b", "--price-per-gpu-hour", "-1"], "must be 0 or more"),
        (["--gpu", "l40s", "--model", "BADCONFIG"], "cannot read config.json"),
        (["--run", "RUN_WITHOUT_FIGURES", "--model", "llama-3.1-8b"], "has no DRAM bandwidth figure"),
    ],
)
def test_bad_inputs_are_one_line_exit_2(tmp_path, capsys, args, expected):
    bad_cfg = tmp_path / "config.json"
    bad_cfg.write_text("{not json")
    empty = write_atomic(make_doc(), tmp_path / "empty.json")
    empty_doc = json.loads(empty.read_text())
    empty_doc["summary"] = []
    write_atomic(empty_doc, empty)
    args = [
        str(bad_cfg) if a == "BADCONFIG" else str(empty) if a == "RUN_WITHOUT_FIGURES" else a for a in args
    ]
    assert cli(analysis_main, ["project", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "error: " in err and expected in err and len(err.splitlines()) == 1


def test_weight_formats_kv_dtypes_and_launch_modes():
    hw = hardware.profile_from_spec(specs.get("h100-sxm5-80gb"))
    base = q("llama-3.1-8b")
    step = {
        fmt: decode.decode_step(hw, q("llama-3.1-8b", weight_dtype=fmt, launch="graph"), 1, 1024)
        for fmt in ("bf16", "fp8", "int8-wo", "int4-wo")
    }
    # fewer bytes per weight, faster batch-1 steps; the weight bytes follow the format (int4: 0.5 + scales)
    assert step["bf16"].seconds > step["fp8"].seconds > step["int4-wo"].seconds
    assert step["int8-wo"].seconds > step["int4-wo"].seconds
    # int4 layers read ~0.53 B per weight; the LM head (1 GB of the 15) stays 16-bit
    assert 0.25 < step["int4-wo"].weight_bytes / step["bf16"].weight_bytes < 0.35
    # fp8 KV halves the KV bytes read
    kv16 = decode.decode_step(hw, base, 32, 4096)
    kv8 = decode.decode_step(hw, q("llama-3.1-8b", kv_dtype="fp8"), 32, 4096)
    assert kv8.kv_bytes == pytest.approx(kv16.kv_bytes / 2) and kv8.kv_s < kv16.kv_s
    # the same kernels cost most launched one aten op at a time, less from a C++ runtime, least from a graph
    torch_eager = engines.resolve("pytorch-eager")
    eager = decode.decode_step(hw, q("llama-3.1-8b", engine=torch_eager), 1, 1024)
    graph = decode.decode_step(hw, q("llama-3.1-8b", engine=torch_eager, launch="graph"), 1, 1024)
    native = decode.decode_step(hw, q("llama-3.1-8b", engine=torch_eager, launch="native"), 1, 1024)
    assert eager.overhead_s > native.overhead_s >= graph.overhead_s > 0
    # launched one by one, kernels overlap the host's next launches: an 8B model's kernels outlast a C++
    # runtime's launches (as fast as a graph), a 0.5B model's do not (launch-bound)
    assert native.seconds == pytest.approx(graph.seconds)
    tiny = {
        launch: decode.decode_step(hw, q("qwen2.5-0.5b", engine=torch_eager, launch=launch), 1, 1024)
        for launch in ("native", "graph")
    }
    assert tiny["native"].seconds > 1.1 * tiny["graph"].seconds
    parts = eager.weights_s + eager.kv_s + eager.compute_s + eager.overhead_s + eager.comm_s + eager.host_s
    assert parts == pytest.approx(eager.seconds)


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["--dtype", "int3"], "--dtype 'int3': expected one of"),
        (["--dtype", "int4-wo", "--group-size", "100"], "--group-size 100"),
        (["--dtype", "int4-wo", "--group-size", "x"], "'x' is not an integer"),
        (["--kv-dtype", "fp4"], "--kv-dtype 'fp4'"),
        (["--launch", "warp"], "'warp'"),
    ],
)
def test_bad_formats_get_one_line_and_exit_2(capsys, args, msg):
    from analysis.__main__ import main as analysis_main

    rc = cli(analysis_main, ["project", "--gpu", "h100-sxm5-80gb", "--model", "llama-3.1-8b", *args])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1


def test_int4_and_fp8_kv_project_from_the_command(capsys):
    from analysis.__main__ import main as analysis_main

    argv = ["project", "--gpu", "h100-sxm5-80gb", "--model", "llama-3.1-8b", "--dtype", "int4-wo"]
    assert analysis_main([*argv, "--kv-dtype", "fp8", "--cuda-graphs", "--batch", "1,16", "--json"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)
    assert [r["batch"] for r in rows] == [1, 16] and rows[0]["weights_seconds"] > 0
    assert analysis_main([*argv, "--group-size", "64"]) == 0
    assert "int4-wo weights, bf16 KV" in capsys.readouterr().out


def test_a_run_with_host_times_sets_the_eager_per_op_cost(tmp_path):
    """profile_from_run takes the per-op host time the decode probe measured inside real steps, by batch; an
    eager engine with its own published per-op cost (transformers' module calls) keeps that."""
    from analysis.rundoc import load

    doc = load(run_doc(tmp_path))
    for b, per_op in ((1, 4e-6), (16, 8e-6)):
        doc["measurements"].append(
            {
                "probe": "decode",
                "case": f"x/fp32/B={b}",
                "device": "cpu",
                "status": "ok",
                "value": 1.0,
                "unit": "tokens_per_s",
                "params": {"kind": "step", "batch": b, "host_seconds_per_op": per_op},
                "timing": {"stats": {"median_s": 1.0}},
            }
        )
    hw = hardware.profile_from_run(doc)
    assert hw.op_s("eager", 1) == pytest.approx(4e-6) and hw.op_s("eager", 16) == pytest.approx(8e-6)
    assert 4e-6 < hw.op_s("eager", 4) < 8e-6
    assert hw.op_s("eager", 1, engines.resolve("hf-transformers").op_seconds) == pytest.approx(20e-6)
    assert hw.op_s("graph", 1) == hw.op_seconds["graph"]  # graphs are not the eager host path


def test_an_moe_step_under_expert_parallelism_splits_into_gemms_attention_all_reduce_and_all_to_all():
    """EP = TP: attention keeps one all-reduce per layer; each MoE layer adds two all-to-alls (dispatch and
    combine) of the rank's share of the batch's tokens x k x hidden; a measured all-to-all curve is used."""
    from analysis import formats, hardware, specs
    from analysis.collectives import Curve
    from analysis.models import load_model

    hw = hardware.profile_from_spec(specs.get("h100-sxm5-80gb"))
    moe = load_model("mixtral-8x7b")
    tp = formats.Query(moe, "fp8", None, 8, 1024, 256)
    ep = formats.Query(moe, "fp8", None, 8, 1024, 256, expert_parallel=True)
    s_tp, s_ep = decode.decode_step(hw, tp, 32, 1100), decode.decode_step(hw, ep, 32, 1100)
    assert s_tp.a2a_s == 0 and s_ep.a2a_s > 0
    assert s_ep.comm_s == pytest.approx(s_tp.comm_s / 2)  # the MoE layers' all-reduce is gone
    per_rank = 4 * moe.experts_per_token * moe.hidden * 2.0  # ceil(32 / 8) tokens x k x hidden x bf16
    assert s_ep.a2a_s == pytest.approx(2 * moe.layers * hw.alltoall_s(per_rank, 8))
    row = decode.project(hw, ep, [32])[0]
    assert row["all_to_all_seconds"] == pytest.approx(s_ep.a2a_s)
    for part in ("weights_seconds", "kv_seconds", "communication_seconds", "all_to_all_seconds"):
        assert row[part] > 0
    # a measured curve of the same world size replaces the link model
    hw.alltoall_curve = Curve("all_to_all", "bf16", 8, (1024, 1 << 20), (50e-6, 400e-6))
    assert hw.alltoall_s(per_rank, 8) == pytest.approx(hw.alltoall_curve.seconds(per_rank))
    # a dense model has no expert to spread
    dense = formats.Query(load_model("llama-3.1-8b"), "bf16", None, 2, 1024, 256, expert_parallel=True)
    assert decode.decode_step(hw, dense, 8, 1100).a2a_s == 0
