"""The run document: round trip, atomic writes, and a loader that refuses what it cannot read."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from helpers import REPO, make_doc

from analysis.rundoc import (
    SCHEMA,
    RunDocumentError,
    create_exclusive,
    default_path,
    load,
    write_atomic,
)


def test_round_trip(tmp_path):
    doc = make_doc()
    p = write_atomic(doc, tmp_path / "sub" / "run.json")
    back = load(p)
    assert back["schema"] == SCHEMA
    assert back["measurements"][0]["value"] == 10.0
    assert back["measurements"][0]["timing"]["samples_s"] == [1.0, None]  # JSON has no infinity
    assert back["summary"] == [
        {
            "probe": "bandwidth",
            "name": "dram_copy_torch",
            "device": "cpu",
            "value": 20.0,
            "unit": "bytes_per_s",
            "min": 10.0,
            "max": 30.0,
            "n_cases": 3,
            "max_cv": 0.01,
            "energy": {
                "joules_per": None,
                "why": "not measured (no telemetry was recorded with these cases)",
            },
        }
    ]
    assert [f.name for f in (tmp_path / "sub").iterdir()] == ["run.json"]  # no temporary left behind


def test_write_is_atomic_when_serialisation_fails(tmp_path):
    p = tmp_path / "run.json"
    write_atomic(make_doc(), p)
    before = p.read_text()
    bad = make_doc()

    class Broken:
        def to_dict(self):
            raise ValueError("cannot serialise")

    bad["measurements"].append(Broken())  # json.dump fails half-way through the file
    with pytest.raises(ValueError, match="cannot serialise"):
        write_atomic(bad, p)
    assert p.read_text() == before
    assert [f.name for f in tmp_path.iterdir()] == ["run.json"]


def test_loader_refuses_a_truncated_file(tmp_path):
    p = tmp_path / "run.json"
    text = json.dumps(make_doc())
    p.write_text(text[: len(text) // 2])
    with pytest.raises(RunDocumentError, match="not valid JSON"):
        load(p)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"name": "some-other-tool", "results": []}, "not a gpuprobe run document"),
        ([1, 2, 3], "not a gpuprobe run document"),
        ({"schema": "gpuprobe.run/99"}, "schema 'gpuprobe.run/99' is not supported"),
    ],
)
def test_loader_refuses_foreign_json(tmp_path, doc, expected):
    p = tmp_path / "foreign.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(RunDocumentError, match=expected):
        load(p)


def test_loader_refuses_broken_measurements(tmp_path):
    doc = make_doc()
    doc["measurements"][0]["status"] = "great"
    p = write_atomic(doc, tmp_path / "a.json")
    with pytest.raises(RunDocumentError, match=r"measurements\[0\].status: 'great' is not one of"):
        load(p)
    doc = make_doc()
    del doc["summary"]
    with pytest.raises(RunDocumentError, match="top level: 'summary' is a required property"):
        load(write_atomic(doc, tmp_path / "b.json"))
    with pytest.raises(RunDocumentError, match="no such file"):
        load(tmp_path / "none.json")


def test_default_path_is_time_host_device():
    p = default_path(
        "results", datetime(2026, 11, 23, 23, 1, 2, tzinfo=timezone.utc), "node 7", "8xNVIDIA H100 80GB HBM3"
    )
    assert str(p) == "results/20261123T230102Z_node-7_8xNVIDIA-H100-80GB-HBM3.json"


def test_runs_started_in_the_same_second_get_their_own_documents(tmp_path):
    when = datetime(2026, 11, 23, 23, 1, 2, tzinfo=timezone.utc)
    paths = [create_exclusive(tmp_path, when, "node", "cpu") for _ in range(3)]
    assert len(set(paths)) == 3 and all(p.exists() for p in paths)
    assert paths[0].name == f"20261123T230102Z_node_cpu_{os.getpid()}.json"
    assert paths[1].name == f"20261123T230102Z_node_cpu_{os.getpid()}-1.json"


def test_three_processes_in_one_second_into_one_folder_leave_three_documents(tmp_path):
    code = (
        "import sys; from datetime import datetime, timezone; from analysis.rundoc import create_exclusive; "
        "print(create_exclusive(sys.argv[1], datetime(2026, 1, 1, tzinfo=timezone.utc), 'h', 'cpu'))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    names = {p.communicate()[0].strip() for p in procs}
    assert len(names) == 3 and len(list(tmp_path.glob("*.json"))) == 3


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_documents_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = create_exclusive(tmp_path, datetime.now(timezone.utc), "h", "cpu")
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
        write_atomic(make_doc(), path)  # replaced by a temporary file that mkstemp made 0600
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    finally:
        os.umask(old)


def test_a_document_written_from_serialized_measurements_is_the_same_document(tmp_path):
    from analysis.rundoc import measurement_text

    doc = make_doc()
    whole = json.loads(write_atomic(doc, tmp_path / "a.json").read_text())
    texts = [measurement_text(m) for m in doc["measurements"]]
    pieces = json.loads(write_atomic(doc, tmp_path / "b.json", texts, durable=False).read_text())
    assert pieces == whole and load(tmp_path / "b.json")["measurements"] == whole["measurements"]
    empty = json.loads(write_atomic({**doc, "measurements": []}, tmp_path / "c.json", []).read_text())
    assert empty["measurements"] == []
