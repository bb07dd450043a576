"""analysis on saved run documents: report, plot, bad files; and no torch import on the way."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import REPO, make_doc

from analysis.__main__ import main as analysis_main
from analysis.plots import bandwidth_series
from analysis.rundoc import write_atomic
from analysis.units import display


def bandwidth_doc() -> dict:
    doc = make_doc()
    doc["devices"] = [
        {"torch_device": "cpu", "name": "Test CPU", "kind": "cpu", "last_level_cache_bytes": 1 << 20}
    ]
    for m in doc["measurements"][:3]:
        m["params"] = {"pattern": "copy", "variant": "torch", "working_set_bytes": int(m["value"]) << 20}
    return doc


def test_display_units_are_decimal():
    assert display(2.95e12, "bytes_per_s") == ("2950.0", "GB/s")
    assert display(7.94e14, "flop_per_s") == ("794.0", "TFLOPS")
    assert display(None, "bytes_per_s") == ("-", "")


def test_report_and_plot_from_a_saved_document(tmp_path, capsys):
    path = write_atomic(bandwidth_doc(), tmp_path / "run.json")
    assert analysis_main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "dram_copy_torch" in out and "CPU figures" in out and "skipped 1 bandwidth case(s): why" in out
    assert analysis_main(["plot", str(path)]) == 0
    png = tmp_path / "run_bandwidth.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert bandwidth_series(bandwidth_doc())[("cpu", "copy", "torch")] == [
        (10 << 20, 10.0),
        (20 << 20, 20.0),
        (30 << 20, 30.0),
    ]


def test_bad_run_document_is_exit_2(tmp_path, capsys):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"hello": "world"}))
    assert analysis_main(["report", str(p)]) == 2
    assert "not a gpuprobe run document" in capsys.readouterr().err


def test_analysis_does_not_import_torch():
    code = "import sys, analysis.report, analysis.plots, analysis.__main__, analysis.rundoc; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


def test_fmt_bytes_uses_binary_prefixes():
    from analysis.units import fmt_bytes

    assert fmt_bytes(8 << 20) == "8 MiB"
    assert fmt_bytes(1536) == "1.5 KiB"
    assert fmt_bytes(3 << 30) == "3 GiB"
    assert fmt_bytes(100) == "100 B"


def test_compare_flags_a_regression_and_gates_with_exit_1(tmp_path, capsys):
    import copy

    old = make_doc()
    new = copy.deepcopy(old)
    new["summary"][0]["value"] = 17.0  # 20 -> 17: -15 %
    new["summary"].append({**new["summary"][0], "name": "dram_triad_torch"})
    a, b = write_atomic(old, tmp_path / "old.json"), write_atomic(new, tmp_path / "new.json")
    assert analysis_main(["compare", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "-15.0%" in out and "REGRESSION" in out and "(missing)" in out
    assert analysis_main(["compare", str(a), str(b), "--threshold", "20"]) == 0
    assert "no regression" in capsys.readouterr().out
    assert analysis_main(["compare", str(a), str(a)]) == 0
    assert analysis_main(["compare", str(a), str(tmp_path / "none.json")]) == 2


def test_data_in_square_brackets_prints_literally(tmp_path, capsys):
    """gloo and NCCL errors carry [...]; rich must print them as text, not read them as markup."""
    doc = bandwidth_doc()
    gloo = "[/root/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:41234 [/bold]"
    doc["errors"].append(f"probe collectives failed: RuntimeError: {gloo}")
    doc["notes"].append("a note with [red]markup[/red] and [/]")
    doc["devices"][0]["name"] = "CPU [x86]"
    bad = make_doc()["measurements"][0]
    doc["measurements"].append(
        {**bad, "status": "error", "value": None, "error": f"rank 1: {gloo}", "case": "c[0]"}
    )
    path = write_atomic(doc, tmp_path / "run.json")
    assert analysis_main(["report", str(path)]) == 0
    out = capsys.readouterr().out.replace("\n", "")
    assert gloo in out and "[red]markup[/red] and [/]" in out and "CPU [x86]" in out and "c[0]" in out


def test_the_slowest_gpu_pair_is_named_against_the_median():
    """A ring collective runs at its slowest link: one degraded XGMI / NVLink pair is named beside the matrix."""
    from analysis.report import slowest_pair

    def pair(src, dst, gbs, link="xGMI (1 hop)"):
        params = {"src": src, "dst": dst, "direction": "one-way", "link": link}
        return {
            "probe": "collectives",
            "case": f"p2p/{src}->{dst}",
            "status": "ok",
            "value": gbs * 1e9,
            "unit": "bytes_per_s",
            "params": params,
        }

    p2p = [pair("cuda:0", "cuda:1", 48), pair("cuda:1", "cuda:2", 49), pair("cuda:2", "cuda:3", 12)]
    note = slowest_pair(p2p)
    assert (
        note.startswith("slowest pair cuda:2 -> cuda:3 (xGMI (1 hop))") and "25 % of the median pair" in note
    )
    assert slowest_pair(p2p[:1]) is None
