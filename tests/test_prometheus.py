"""The node_exporter textfile (analysis/prometheus.py): written with prometheus_client, parsed back with its
parser, every headline and health verdict labelled by node, device, dtype and variant."""

from __future__ import annotations

from helpers import cli, h100_doc

from analysis.__main__ import main as analysis_main
from analysis.rundoc import write_atomic


def test_the_textfile_parses_back_with_every_headline_and_verdict(tmp_path, capsys):
    from prometheus_client.parser import text_string_to_metric_families

    doc = h100_doc()
    doc["status"] = "completed"
    doc["finished_utc"] = "2026-11-25T04:00:00+00:00"
    doc["health"] = [
        {"device": "cuda:0", "verdict": "pass", "reasons": []},
        {"device": "cuda:1", "verdict": "fail", "reasons": ["fail: XID 79 during the run"]},
    ]
    run = write_atomic(doc, tmp_path / "run.json")
    assert analysis_main(["export", str(run), "--format", "prometheus", "-o", str(tmp_path / "prom")]) == 0
    path = tmp_path / "prom" / "gpuprobe.prom"
    assert capsys.readouterr().out.strip() == str(path)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted({"node": "h", **labels}.items())))]

    assert value("gpuprobe_matmul_flops_per_second", device="cuda:0", dtype="bf16", variant="torch") == 650e12
    assert (
        value("gpuprobe_collective_busbw_bytes_per_second", device="cuda:0", op="all_reduce", dtype="bf16")
        == 360e9
    )
    assert value("gpuprobe_health_verdict", device="cuda:1") == 2
    assert value("gpuprobe_health_verdict", device="cuda:0") == 0
    assert value("gpuprobe_run_timestamp_seconds") == 1795579200
    names = {n for n, _ in samples}
    assert "gpuprobe_memory_bandwidth_bytes_per_second" in names and "gpuprobe_run_info" in names


def test_bad_export_input_is_one_line(tmp_path, capsys):
    run = write_atomic(h100_doc(), tmp_path / "run.json")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for argv, expected in (
        (["export", str(run), "--format", "graphite", "-o", str(tmp_path)], "invalid choice: 'graphite'"),
        (["export", str(run), "--format", "prometheus", "-o", str(a_file)], "is a file, not a folder"),
        (["export", str(run), "--format", "prometheus", "-o", "/proc/self/x"], "/proc/self"),
    ):
        assert cli(analysis_main, argv) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err
