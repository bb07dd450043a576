"""Faults and bad input across every command: one line naming the file, key and problem, exit 2, before any
measuring starts (no run document is written). One case per category at least; signals, SIGKILL and orphans
are in test_interrupt.py, unique names and the umask in test_rundoc.py, markup in test_analysis.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, cli, make_doc

from analysis.__main__ import main as analysis_main
from analysis.rundoc import write_atomic
from probes.all import main as all_main
from probes.all import probe_main
from probes.estimate import main as config_main
from probes.profile import main as profile_main

LATIN1 = "caf\xe9 = 1\n".encode("latin-1")


def model_json(tmp_path: Path, **changes) -> Path:
    cfg = json.loads((REPO / "analysis/data/models/qwen2.5-0.5b.json").read_text())
    cfg.update(changes)
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    return p


def one_line_exit_2(capsys, rc: int, *expected: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for e in expected:
        assert e in err, err
    return err


# ---- bench.toml: probes.all refuses it before measuring -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[timing]\nwarmup_s = inf\n", "timing.warmup_s: must be a finite number"),
        ("[timing]\ncase_budget_s = -1.0\n", "timing.case_budget_s: must be positive"),
        (
            "[collectives]\ncollective_timeout_s = 1e300\n",
            "collective_timeout_s: must be between 0 and 86400",
        ),
        ("[collectives]\ncollective_timeout_s = inf\n", "collective_timeout_s: must be a finite number"),
        ('[timing]\nmin_reps = "five"\n', "timing.min_reps: expected an integer"),
        ("[decode]\nbatches = []\n", "decode.batches: must not be empty"),
        ('[matmul]\ndecode_models = ["gpt-17"]\n', "unknown model 'gpt-17'"),
        ("[timing\n", "TOML syntax error"),
    ],
)
def test_a_bad_bench_toml_is_one_line_and_nothing_runs(tmp_path, capsys, text, expected):
    cfg = tmp_path / "bench.toml"
    cfg.write_text(text + '[profiles.quick]\nprobes = ["bandwidth"]\n')
    rc = cli(all_main, ["--config", str(cfg), "--device", "cpu", "--out", str(tmp_path / "out")])
    one_line_exit_2(capsys, rc, str(cfg), expected)
    assert not list((tmp_path / "out").glob("*.json"))


@pytest.mark.parametrize("kind", ["folder", "binary", "latin-1", "missing"])
def test_a_bench_toml_that_is_no_text_file_is_one_line(tmp_path, capsys, kind):
    cfg = tmp_path / "bench.toml"
    if kind == "folder":
        cfg.mkdir()
    elif kind == "binary":
        cfg.write_bytes(Path(sys.executable).resolve().read_bytes()[:4096])
    elif kind == "latin-1":
        cfg.write_bytes(LATIN1)
    want = {"folder": "is a folder", "binary": "not UTF-8", "latin-1": "not UTF-8", "missing": "no such file"}
    for main in (all_main, config_main):
        one_line_exit_2(capsys, cli(main, ["--config", str(cfg)]), str(cfg), want[kind])


# ---- config.json of a model ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"hidden_size": -896}, "hidden_size = -896: expected a positive integer"),
        ({"num_hidden_layers": 0}, "num_hidden_layers = 0: expected a positive integer"),
        ({"num_key_value_heads": 3}, "not a multiple of num_key_value_heads 3"),
        ({"num_key_value_heads": "2"}, "num_key_value_heads = '2'"),
        ({"vocab_size": True}, "vocab_size = True"),
    ],
)
def test_a_bad_config_json_is_refused_by_every_reader(tmp_path, capsys, changes, expected):
    p = model_json(tmp_path, **changes)
    rc = cli(analysis_main, ["project", "--gpu", "l40s", "--model", str(p)])
    one_line_exit_2(capsys, rc, str(p), expected)
    toml = tmp_path / "b.toml"
    toml.write_text(f'[decode]\nmodel = "{p}"\n[profiles.quick]\nprobes = ["decode"]\n')
    rc = cli(all_main, ["--config", str(toml), "--device", "cpu", "--out", str(tmp_path / "out")])
    one_line_exit_2(capsys, rc, "decode.model", expected)


@pytest.mark.parametrize(("text", "expected"), [("[1, 2]", "top level is list"), ("{", "cannot read")])
def test_a_config_json_that_is_no_object_is_one_line(tmp_path, capsys, text, expected):
    p = tmp_path / "config.json"
    p.write_text(text)
    one_line_exit_2(capsys, cli(analysis_main, ["project", "--gpu", "l40s", "--model", str(p)]), expected)
    p.write_bytes(LATIN1)
    one_line_exit_2(capsys, cli(analysis_main, ["project", "--gpu", "l40s", "--model", str(p)]), "not UTF-8")


# ---- claims files, published-data CSVs, run documents ----------------------------------------------------

CLAIM = """[[claim]]
name = "x"
model = "llama-3.1-8b"
gpu = "h100-sxm5-80gb"
dtype = "bf16"
tp = 1
batch = 8
input_len = 128
output_len = 128
counts = "output"
claimed_tokens_per_s = {claimed}
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CLAIM.format(claimed="inf"), "claimed_tokens_per_s must be a positive number"),
        (CLAIM.format(claimed="-500"), "claimed_tokens_per_s must be a positive number"),
        (CLAIM.format(claimed="500").replace('gpu = "h100-sxm5-80gb"', ""), "missing 'gpu'"),
        (CLAIM.format(claimed="500").replace("tp = 1", "tp = 0"), "--tp 0"),
        ("", "no [[claim]] rows"),
    ],
)
def test_a_bad_claims_file_is_one_line(tmp_path, capsys, text, expected):
    p = tmp_path / "claims.toml"
    p.write_text(text)
    one_line_exit_2(capsys, cli(analysis_main, ["audit", str(p)]), str(p), expected)


@pytest.mark.parametrize("kind", ["folder", "latin-1", "empty"])
def test_every_reader_refuses_a_folder_or_a_non_utf8_file(tmp_path, capsys, kind):
    p = tmp_path / "input"
    if kind == "folder":
        p.mkdir()
    else:
        p.write_bytes(LATIN1 if kind == "latin-1" else b"")
    want = {"folder": "is a folder", "latin-1": "not UTF-8", "empty": ""}[kind]
    for argv in (["report", str(p)], ["audit", str(p)], ["backtest", "--csv", str(p)], ["fleet", str(p)]):
        # fleet takes folders of run documents: an empty one holds none
        want_here = "no readable run document" if argv[0] == "fleet" and kind == "folder" else want
        rc = cli(analysis_main, argv)
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "Traceback" not in err and want_here in err, (argv, err)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["summary"].__setitem__(0, 7), "summary[0]: 7 is not of type 'object'"),
        (lambda d: d["summary"][0].pop("name"), "summary[0]: 'name' is a required property"),
        (lambda d: d["summary"][0].__setitem__("value", -1.0), "summary[0].value: -1.0 is less than"),
        (lambda d: d["measurements"][0].__setitem__("status", "great"), "measurements[0].status: 'great'"),
        (lambda d: d.__setitem__("status", "exploded"), "status: 'exploded' is not one of"),
        (lambda d: d["measurements"][0]["timing"]["stats"].__setitem__("median_s", -1), "median_s: -1"),
    ],
)
def test_a_run_document_that_breaks_the_schema_is_one_line_everywhere(tmp_path, capsys, change, expected):
    doc = make_doc()
    change(doc)
    p = write_atomic(doc, tmp_path / "run.json")
    for argv in (["report", str(p)], ["roofline", str(p)], ["compare", str(p), str(p)], ["export", str(p)]):
        one_line_exit_2(capsys, cli(analysis_main, argv), expected)
    one_line_exit_2(
        capsys, cli(analysis_main, ["project", "--run", str(p), "--model", "qwen2.5-0.5b"]), expected
    )


def test_nan_in_a_run_document_is_refused(tmp_path, capsys):
    p = tmp_path / "run.json"
    p.write_text(json.dumps(make_doc()).replace('"value": 10.0', '"value": NaN'))
    one_line_exit_2(capsys, cli(analysis_main, ["report", str(p)]), "NaN is not a JSON number")


# ---- CLI values -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["project", "--gpu", "l40s", "--model", "llama-3.1-8b", "--batch", "1,,2"], "--batch"),
        (["project", "--gpu", "l40s", "--model", "llama-3.1-8b", "--tp", "-1"], "--tp"),
        (["project", "--gpu", "l40s", "--model", "llama-3.1-8b", "--price-per-gpu-hour", "inf"], "finite"),
        (
            [
                "crossover",
                "--model",
                "llama-3.1-8b",
                "--a",
                "l40s:bf16:1",
                "--b",
                "l4:bf16:1",
                "--batch",
                "0",
            ],
            "--batch",
        ),
        (
            [
                "crossover",
                "--model",
                "llama-3.1-8b",
                "--a",
                "l40s:bf16:1",
                "--b",
                "l4:bf16:1",
                "--input-len",
                "x",
            ],
            "--input-len",
        ),
        (["compare", "a.json", "b.json", "--threshold", "nan"], "--threshold"),
        (["export", "run.json", "--format", "csv"], "--format"),
        (["backtest", "--half", "middle"], "--half"),
    ],
)
def test_bad_cli_values_are_one_line(capsys, argv, expected):
    one_line_exit_2(capsys, cli(analysis_main, argv), expected)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--device", ""], "--device: must not be empty"),
        (["--device", "cuda:99"], "--device cuda:99"),
        (["--out", ""], "--out: must not be empty"),
        (["--only", ""], "--only '': no probe named"),
        (["--only", "flops"], "--only flops: unknown probe"),
        (["--world-size", "0"], "--world-size"),
        (["--port", "http"], "--port"),
        (["--frobnicate"], "unrecognized arguments"),
    ],
)
def test_bad_probes_flags_are_one_line_and_nothing_runs(tmp_path, capsys, argv, expected):
    rc = cli(all_main, ["--device", "cpu", "--out", str(tmp_path), *argv])
    one_line_exit_2(capsys, rc, expected)
    assert not list(tmp_path.glob("*.json"))


def test_a_probe_module_refuses_only_and_skip(capsys):
    one_line_exit_2(capsys, probe_main("bandwidth", ["--only", "decode"]), "--only does not apply")


def test_a_failing_profile_factory_is_one_line(capsys):
    one_line_exit_2(capsys, cli(profile_main, ["os:getcwd", "--device", "cpu"]), "os:getcwd(cpu) failed")
    one_line_exit_2(capsys, cli(profile_main, ["x:y", "--device", "cpu", "--flops", "-1"]), "--flops")


# ---- output paths ----------------------------------------------------------------------------------------


def test_output_paths_are_checked_before_the_work(tmp_path, capsys):
    run = write_atomic(make_doc(), tmp_path / "run.json")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        (["plot", str(run), "-o", str(a_file / "x.png")], "a_file is a file, not a folder"),
        (["plot", str(run), "-o", str(tmp_path)], "is a folder; give a file name"),
        (["plot", str(run), "-o", str(tmp_path / "x.txt")], "should end in .png"),
        (["export", str(run), "-o", str(a_file)], "is a file, not a folder"),
        (["roofline", str(run), "-o", "/proc/self/x.png"], "/proc/self"),
    ]
    for argv, expected in cases:
        one_line_exit_2(capsys, cli(analysis_main, argv), expected)
    # a missing folder is made, as `probes.all --out` does
    assert cli(analysis_main, ["plot", str(run), "-o", str(tmp_path / "new" / "deeper" / "b.png")]) == 0
    assert (tmp_path / "new" / "deeper" / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_probes_all_refuses_an_out_that_is_a_file_before_measuring(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    rc = cli(all_main, ["--device", "cpu", "--only", "hostlink", "--out", str(a_file)])
    one_line_exit_2(capsys, rc, "--out", "is a file, not a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_folder_is_refused(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    one_line_exit_2(capsys, cli(all_main, ["--device", "cpu", "--out", str(ro)]), "not writable")


def test_torchrun_with_a_bad_environment_or_out_is_one_line(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    base = {
        **os.environ,
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
    }
    cases = [
        ({"RANK": "x"}, [], "RANK='x': expected an integer"),
        ({"RANK": "5"}, [], "torchrun environment: RANK=5 WORLD_SIZE=2"),
        ({"RANK": "0"}, ["--out", str(a_file)], "--out"),
        ({"RANK": "0"}, ["--world-size", "3"], "--world-size: does not apply under torchrun"),
    ]
    for env, argv, expected in cases:
        r = subprocess.run(
            [sys.executable, "-m", "probes.torchrun", "--device", "cpu", *argv],
            cwd=REPO,
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert expected in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


# ---- the suite does not depend on the box's speed ----------------------------------------------------------

BUSY = "import time\nt = time.time() + 120\nwhile time.time() < t:\n    pass\n"


@pytest.mark.slow
def test_time_bounded_tests_pass_beside_two_busy_processes():
    """The tests that used to fail on a busy box (the matmul probe's time predictor skipped a case they
    expected) pass with both cores taken by busy loops."""
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(2)]
    try:
        time.sleep(0.5)
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/test_matmul.py",
                "-k",
                "measures_verifies_and_skips or out_of_memory_is_recorded or bounded_by_the_time_budget",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert r.returncode == 0 and "3 passed" in r.stdout, r.stdout[-2000:]


# ---- the last door cases (issue 25) ------------------------------------------------------------------------


def test_a_huge_square_size_is_skipped_for_its_memory_not_for_an_oom_that_never_happened(tmp_path):
    """square_sizes = [128, 2000000]: 2e6^3 exceeded the "no OOM yet" sentinel (1 << 62), so the big size was
    said to follow "a smaller shape that already ran out of memory" when nothing had."""
    from probes import matmul
    from probes.config import load_config
    from probes.context import Context
    from probes.nvml import NoNvml

    cfg = tmp_path / "b.toml"
    cfg.write_text(
        '[matmul]\nsquare_sizes = [128, 2000000]\ndtypes = ["fp32"]\nvariants = ["torch"]\ndecode_models = []\n'
        '[profiles.t]\nprobes = ["matmul"]\n'
    )
    import torch

    ctx = Context(cfg=load_config(cfg), devices=[torch.device("cpu")], nvml=NoNvml())
    big = next(m for m in matmul.run(ctx) if m.case.endswith("/2000000"))
    assert big.status == "skipped" and big.error.startswith("needs ") and "of the free memory" in big.error
    assert "ran out of memory" not in big.error


def measurement(probe: str, headline: str, device: str, value: float, unit: str) -> dict:
    from analysis.rundoc import Measurement

    m = Measurement(
        probe=probe, case="c", device=device, params={}, value=value, unit=unit, headline=headline
    )
    return m.to_dict()


def test_compare_with_no_figure_in_common_says_there_is_nothing_to_compare(tmp_path, capsys):
    from analysis.rundoc import headline_summary

    a, b = make_doc(), make_doc()
    a["summary"] = [
        headline_summary([measurement("bandwidth", "dram_copy_torch", "cuda:0", 3e12, "bytes_per_s")])[0]
    ]
    b["summary"] = [
        headline_summary([measurement("matmul", "matmul_peak_bf16_torch", "cpu", 1e12, "flop_per_s")])[0]
    ]
    pa, pb = write_atomic(a, tmp_path / "a.json"), write_atomic(b, tmp_path / "b.json")
    rc = cli(analysis_main, ["compare", str(pa), str(pb)])
    out, err = capsys.readouterr()
    assert rc == 2 and len(err.strip().splitlines()) == 1 and out == "", (out, err)  # no "(missing)" table
    for words in (
        "nothing to compare",
        "share no headline figure",
        "1 on cuda:0",
        "1 on cpu",
        "no regression can",
    ):
        assert words in err, err


def test_a_claims_file_with_claim_as_a_list_of_numbers_is_one_line(tmp_path, capsys):
    claims = tmp_path / "c.toml"
    claims.write_text("claim = [1, 2]\n")
    rc = cli(analysis_main, ["audit", str(claims)])
    one_line_exit_2(capsys, rc, "claim 1 is int 1, not a table", "[[claim]]")


def test_a_workload_that_raises_is_one_line_naming_it_and_its_error(tmp_path, capsys, monkeypatch):
    (tmp_path / "badwork.py").write_text(
        "import torch\n\ndef make(device):\n    a = torch.ones(4, 4)\n\n"
        "    def fn():\n        return a @ torch.ones(3, 3)\n\n    return fn\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    run = write_atomic(make_doc(), tmp_path / "run.json")
    rc = cli(profile_main, ["badwork:make", "--device", "cpu", "--flops", "1", "--run", str(run)])
    one_line_exit_2(
        capsys,
        rc,
        "badwork:make: the workload raised RuntimeError",
        "cannot be multiplied",
        "badwork.py:7 in fn",
    )


def test_skip_records_are_kept_as_they_are_made(tmp_path):
    """Ctrl-C in the first probe keeps what `keep` received: the skip records of finished cases too (the
    Triton variants on a CPU, here), not only the measured ones."""
    import torch
    from helpers import TINY_PROBES_TOML

    from probes import bandwidth
    from probes.config import load_config
    from probes.context import Context
    from probes.nvml import NoNvml

    cfg = tmp_path / "b.toml"
    cfg.write_text(TINY_PROBES_TOML)
    kept: list = []
    ctx = Context(cfg=load_config(cfg), devices=[torch.device("cpu")], nvml=NoNvml(), keep=kept.append)
    ms = bandwidth.run(ctx)
    assert any(m.status == "skipped" for m in ms)
    assert [m.case for m in kept] == [m.case for m in ms]  # every record, in order, as it was made


def test_a_run_document_is_never_visible_empty(tmp_path, monkeypatch):
    """The document is written whole to a temporary file and published with os.link (atomic, fails if the
    name exists), so a reader polling the folder never reads a zero-byte or half-made document."""
    from datetime import datetime, timezone

    from analysis import rundoc

    doc = make_doc()
    seen = []
    real_link = os.link

    def link(src, dst):
        assert not Path(dst).exists()  # nothing under the name before the link
        seen.append(json.loads(Path(src).read_text()))  # what appears under it is the whole document
        real_link(src, dst)

    monkeypatch.setattr(rundoc.os, "link", link)
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    path = rundoc.create_exclusive(tmp_path, when, "h", "cpu", doc)
    assert (
        seen
        and seen[0]["schema"] == doc["schema"]
        and json.loads(path.read_text())["schema"] == doc["schema"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # the temporary file is gone
    # a second run in the same second gets its own name; a filesystem without hard links still works
    monkeypatch.setattr(rundoc.os, "link", lambda src, dst: (_ for _ in ()).throw(PermissionError(1, "no")))
    other = rundoc.create_exclusive(tmp_path, when, "h", "cpu", doc)
    assert other != path and json.loads(other.read_text())["schema"] == doc["schema"]
    assert len(list(tmp_path.iterdir())) == 2
