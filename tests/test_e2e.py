"""End to end: `python -m probes.all` with the shipped quick profile on this (GPU-less) machine."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from helpers import REPO

from analysis.decode_report import decode_rows
from analysis.rundoc import load


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback of a plain run")
def test_plain_probes_all_runs_the_quick_profile_on_the_cpu(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(REPO)
    r = subprocess.run(
        [sys.executable, "-m", "probes.all"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # a busy box slows the run; a hang still ends
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "no GPU found: measuring the CPU" in r.stderr
    assert "These are CPU figures" in r.stdout
    (path,) = (tmp_path / "results").glob("*.json")
    doc = load(path)
    assert doc["status"] == "completed"
    assert doc["config"]["profile"] == "quick"
    # Under 90 s on an idle 2-core box (the closing notes give the figures); not asserted here, where the box may
    # be busy: tests/test_estimate.py bounds the profile's budgets instead, which no load changes.
    names = {s["name"] for s in doc["summary"]}
    assert {"dram_read_torch", "dram_write_torch", "dram_copy_torch", "dram_triad_torch"} <= names
    assert {"matmul_peak_fp32_torch", "matmul_peak_bf16_torch", "matmul_peak_fp8_e4m3_torch"} <= names
    assert "all_reduce_busbw_fp32" in names  # a real 2-process gloo all-reduce
    for s in doc["summary"]:
        if s["probe"] in ("bandwidth", "collectives"):
            assert s["unit"] == "bytes_per_s" and 1e6 < s["value"] < 1e13
        elif s["probe"] == "decode":  # seconds per tiny op, eager
            assert s["name"] == "op_overhead_eager_torch" and s["unit"] == "seconds" and 0 < s["value"] < 1e-3
        else:
            assert s["unit"] == "flop_per_s" and 1e6 < s["value"] < 1e16
    assert "Matmul peak per dtype" in r.stdout and "Decode-shaped GEMMs" in r.stdout
    assert "TF32 is a GPU tensor-core mode" in r.stdout
    # the report ends with verdicts (none on a CPU), the roofline and a decode projection of bench.toml's model
    assert "verdicts: none (CPU figures" in r.stdout
    assert path.with_name(path.stem + "_roofline.png").read_bytes()[:4] == b"\x89PNG"
    assert "qwen2.5-0.5b fp32 weights" in r.stdout
    # real decode steps beside the projection from this run's roofline, batch 1, 4 and 16
    assert "Decode: measured tokens/s vs the projection" in r.stdout
    decode = [m for m in doc["measurements"] if m["probe"] == "decode" and m["params"].get("kind") == "step"]
    steps = sorted((m["params"]["dtype"], m["params"]["batch"]) for m in decode if m["status"] == "ok")
    # the first format's steps always run; the quick profile's time budget (probes.schedule) may trim the
    # second's, each then recorded as trimmed, and the note says what was
    assert steps[:3] == [("fp32", b) for b in (1, 4, 16)]
    trimmed = [m for m in decode if m["status"] == "skipped"]
    assert len(steps) + len(trimmed) == 6 and all(m["error"].startswith("trimmed") for m in trimmed)
    assert any(n.startswith("time budget: 72 s for the quick profile") for n in doc["notes"])
    # measured beside projected from the run's parts: a gross miss (a part dropped, a unit slip) fails here;
    # the accuracy itself (within 10-15 %) is reported by the run, not asserted on a busy CI box. The first
    # format's GEMMs are never trimmed; the second's may be, and its projection then has no measured GEMMs.
    rows = [r for r in decode_rows(doc) if r["dtype"] == "fp32"]
    assert len(rows) == 3 and all(abs(r["projected_error"]) < 0.5 for r in rows), [
        (r["dtype"], r["batch"], r["projected_error"]) for r in rows
    ]
    assert any("STREAM" in n for n in doc["notes"]) and any("2*M*N*K" in n for n in doc["notes"])
    assert not [m for m in doc["measurements"] if m["status"] == "error"]
    assert doc["devices"][0]["kind"] == "cpu"
    png = path.with_name(path.stem + "_bandwidth.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.name in r.stdout.replace("\n", "")
