"""Profiling a real step (probes/trace.py, `python -m probes.profile --trace`): every top-level op attributed,
FLOPs from analysis/opcost.py exactly, op times adding up to the step, a roofline PNG and the Chrome trace,
the run document's report; one line and exit 2 for a factory that fails, a missing module, nothing to trace."""

from __future__ import annotations

import json

import pytest
from helpers import cli, h100_doc, requires_cuda

from analysis.__main__ import main as analysis_main
from analysis.opcost import op_cost
from analysis.rundoc import load, write_atomic
from probes.profile import main as profile_main


def traced(tmp_path, target: str, device: str = "cpu") -> dict:
    run = write_atomic(h100_doc(), tmp_path / "roof.json")  # the roofline the ops are placed on
    out = tmp_path / "out"
    assert (
        profile_main(
            ["--trace", f"trace_workloads:{target}", "--device", device, "--run", str(run), "-o", str(out)]
        )
        == 0
    )
    (doc_path,) = [p for p in out.glob("*.json") if not p.stem.endswith("_trace")]
    return {"path": doc_path, "doc": load(doc_path)}


def test_an_mlp_step_on_the_cpu(tmp_path, capsys):
    t = traced(tmp_path, "mlp")
    doc, path = t["doc"], t["path"]
    ops = {(m["params"]["op"], m["params"]["shapes"]): m["params"] for m in doc["measurements"]}
    lin1 = ops[("aten::linear", "[[64, 1024], [4096, 1024], [4096]]")]
    lin2 = ops[("aten::linear", "[[64, 4096], [1024, 4096], [1024]]")]
    assert lin1["flops_per_step"] == 2 * 64 * 4096 * 1024 == lin2["flops_per_step"]  # exactly 2*M*N*K
    assert lin1["calls_per_step"] == 1 and lin1["kind"] == "gemm" and lin1["fraction"] > 0
    assert any(op == "aten::gelu" for op, _ in ops)
    step = doc["trace"]
    assert abs(step["ops_s"] - step["device_s"]) <= 0.10 * step["device_s"], step  # the ops are the step
    assert path.with_name(path.stem + "_trace.png").read_bytes()[:4] == b"\x89PNG"
    chrome = json.loads(path.with_name(path.stem + "_trace.json").read_text())
    assert chrome.get("traceEvents")
    out = capsys.readouterr().out
    assert "Traced step" in out and "idle share" in out
    html = tmp_path / "t.html"
    assert analysis_main(["report", str(path), "--format", "html", "-o", str(html)]) == 0
    assert "Traced step" in html.read_text() and "aten::linear" in html.read_text()


def test_the_projects_decoder_step_names_its_gemms_attention_and_small_ops(tmp_path):
    doc = traced(tmp_path, "decoder")["doc"]
    kinds = {m["params"]["kind"] for m in doc["measurements"]}
    names = {m["params"]["op"] for m in doc["measurements"]}
    assert "gemm" in kinds and "attention" in kinds and ("elementwise" in kinds or "reduction" in kinds)
    assert "aten::scaled_dot_product_attention" in names


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (
            "trace_workloads:raises",
            "trace_workloads:raises(cpu) failed: RuntimeError: the model file is missing",
        ),
        ("no_such_module:make", "cannot import no_such_module"),
        ("trace_workloads:not_callable", "returned int, not a callable to trace"),
        ("trace_workloads:nothing", "ran no torch op and no kernel: nothing to attribute"),
    ],
)
def test_a_bad_trace_target_is_one_line_and_exit_2(tmp_path, capsys, target, expected):
    rc = cli(profile_main, ["--trace", target, "--device", "cpu", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and expected in err and len(err.splitlines()) == 1, err


def test_the_formula_table_says_what_it_does_not_know():
    assert op_cost("aten::my_custom_op", [[4, 4]], ["float"]) is None
    assert op_cost("aten::bmm", [[8, 64, 32], [8, 32, 16]], ["float", "float"]).flops == 2 * 8 * 64 * 32 * 16
    sdpa = op_cost(
        "aten::scaled_dot_product_attention", [[2, 8, 1, 64], [2, 8, 100, 64], [2, 8, 100, 64]], ["float"] * 3
    )
    assert sdpa.flops == 4 * 2 * 8 * 1 * 100 * 64 and sdpa.kind == "attention"


@requires_cuda
@pytest.mark.parametrize(
    ("target", "name"), [("cublas_gemm", "aten::matmul"), ("triton_copy", "copy_kernel")]
)
def test_gpu_kernels_are_attributed(tmp_path, target, name):
    doc = traced(tmp_path, target, "cuda")["doc"]
    rows = {m["params"]["op"]: m["params"] for m in doc["measurements"]}
    assert any(name in op for op in rows), rows.keys()
    assert doc["trace"]["device_s"] > 0 and 0 <= doc["trace"]["idle_share"] <= 1
