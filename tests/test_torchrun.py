"""One rank under torchrun: two real gloo ranks started by torchrun, rank 0 writes the run document."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import REPO

from analysis.rundoc import load


@pytest.mark.slow
def test_torchrun_standalone_two_ranks(tiny, tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(REPO)
    r = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "probes.torchrun",
            "--device",
            "cpu",
            "--config",
            str(tiny),
            "--out",
            str(tmp_path / "r"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (path,) = (tmp_path / "r").glob("*.json")
    doc = load(path)
    ok = [m for m in doc["measurements"] if m["status"] == "ok"]  # 4 ops x 2 dtypes x 5 sizes
    assert len(ok) == 40 and all(m["params"]["world_size"] == 2 for m in ok)
    assert "torchrun: 2 ranks (gloo)" in " ".join(doc["notes"])
    assert "Collectives" in r.stdout
