"""pytest-benchmark's save-then-compare workflow, end to end, on a benchmark whose speed the test controls.

The threshold is the one the README gives for a shared CPU VM, median:110 %: unchanged reruns of the CPU
headline benchmarks here slowed by up to 104 % (7 reruns within 3 minutes; a calmer hour: 18 %). A
deliberately 3x slower case must fail it; the unchanged rerun must pass. The case sleeps, so the test itself
does not depend on the machine's noise.
"""

from __future__ import annotations

import os
import subprocess
import sys

THRESHOLD = "median:110%"

BENCH = """
import os, time

def test_work(benchmark):
    delay = float(os.environ["GPUPROBE_TEST_DELAY_S"])
    benchmark.pedantic(time.sleep, args=(delay,), rounds=5, iterations=1, warmup_rounds=1)
"""


def run(tmp_path, delay: float, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GPUPROBE_TEST_DELAY_S": str(delay)}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "bench_sleep.py",
        "-q",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(tmp_path),
        "--benchmark-enable",
        "--benchmark-only",
        f"--benchmark-storage=file://{tmp_path / 'store'}",
        *extra,
    ]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_autosave_then_compare_fails_a_regression_and_passes_an_unchanged_rerun(tmp_path):
    (tmp_path / "bench_sleep.py").write_text(BENCH)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # keep the project's addopts (--benchmark-disable) out
    base = run(tmp_path, 0.02, "--benchmark-autosave")
    assert base.returncode == 0, base.stdout + base.stderr
    assert list((tmp_path / "store").rglob("0001_*.json"))
    slow = run(tmp_path, 0.06, "--benchmark-compare", f"--benchmark-compare-fail={THRESHOLD}")
    assert slow.returncode != 0
    assert "Performance has regressed" in slow.stdout + slow.stderr
    same = run(tmp_path, 0.02, "--benchmark-compare", f"--benchmark-compare-fail={THRESHOLD}")
    assert same.returncode == 0, same.stdout + same.stderr
