"""Signals (probes/interrupt.py and the runner): a real SIGINT or SIGTERM in the middle of each probe keeps
every case finished before it, marks the document "interrupted" and exits 130 / 143 with the report; a
signal before anything was measured is one line; child processes die with their parent, even on SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, fast_timing_toml

from analysis.rundoc import load

# Every probe long enough on a 2-core CPU (tens of cases of 0.3 s) that a signal lands in its middle.
LONG_TOML = (
    fast_timing_toml(0.3)
    .replace("max_reps = 10", "max_reps = 1000")
    .replace("target_rse = 0.5", "target_rse = 0.0001")
    + """
[bandwidth]
patterns = ["read", "write", "copy", "triad"]
variants = ["torch"]
working_set_cache_multiples = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32]
dram_min_cache_multiple = 0.1
[matmul]
dtypes = ["fp32"]
variants = ["torch"]
square_sizes = [64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416]
decode_models = []
[collectives]
ops = ["all_reduce", "all_gather", "reduce_scatter"]
dtypes = ["fp32"]
min_bytes = 8
max_bytes = 65536
size_factor = 2
collective_timeout_s = 30.0
[decode]
model = "qwen2.5-0.5b"
dtypes = ["fp32"]
batches = [1, 2, 3, 4, 5, 6, 7, 8]
context = 16
max_layers = 1
[profiles.long]
probes = ["bandwidth", "matmul", "collectives", "decode"]
"""
)


def start(tmp_path: Path, probe: str) -> tuple[subprocess.Popen, Path]:
    cfg = tmp_path / "long.toml"
    cfg.write_text(LONG_TOML)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "probes.all", "--device", "cpu", "--config", str(cfg), "--profile", "long"]
    cmd += ["--only", probe, "--out", str(out)]
    env = {**os.environ, "COLUMNS": "140"}
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    return proc, out


def saved_cases(out: Path, probe: str) -> int:
    """Ok cases of `probe` in the document on disk while the probe is still running (else -1)."""
    for path in out.glob("*.json"):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):  # not written yet (the empty file of O_EXCL)
            return -1
        if doc["probes"].get(probe, {}).get("status") != "running":
            return -1
        return sum(m["probe"] == probe and m["status"] == "ok" for m in doc["measurements"])
    return -1


def handles(pid: int, sig: int) -> bool:
    """Whether process `pid` has a handler for `sig` (Linux: SigCgt of /proc/PID/status)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line.split()[1] for line in text.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught >> (sig - 1) & 1)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("probe", ["bandwidth", "matmul", "collectives", "decode"])
def test_a_signal_mid_probe_keeps_its_finished_cases(tmp_path, probe, sig):
    proc, out = start(tmp_path, probe)
    seen, deadline = -1, time.monotonic() + 120
    while seen < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
        seen = saved_cases(out, probe)
    assert seen >= 1 and proc.poll() is None, (
        f"the probe finished or never saved a case: {proc.communicate()}"
    )
    if sig == signal.SIGINT:  # Ctrl-C in a terminal: the whole process group (collective ranks too)
        os.killpg(proc.pid, sig)
    else:  # `kill PID`, a scheduler: the run's own process
        proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr
    (path,) = out.glob("*.json")
    doc = load(path)
    assert doc["status"] == "interrupted"
    assert doc["probes"][probe]["status"] == "interrupted"
    kept = [m for m in doc["measurements"] if m["probe"] == probe and m["status"] == "ok"]
    assert len(kept) >= seen and doc["probes"][probe]["cases_kept"] >= seen
    assert f"interrupted by {signal.Signals(sig).name}" in stderr
    assert "run document:" in stdout  # the report of what was measured still prints


@pytest.mark.slow
def test_a_sigkill_mid_probe_loses_no_finished_case(tmp_path):
    """SIGKILL cannot be caught: the document on disk must already hold every finished case."""
    proc, out = start(tmp_path, "decode")
    seen, deadline = -1, time.monotonic() + 120
    while seen < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = saved_cases(out, "decode")
    assert seen >= 2 and proc.poll() is None
    proc.kill()
    proc.communicate()
    (path,) = out.glob("*.json")
    doc = load(path)  # a whole, valid document: the probe "running", its finished cases in it
    assert doc["status"] == "running" and doc["probes"]["decode"]["status"] == "running"
    assert sum(m["probe"] == "decode" and m["status"] == "ok" for m in doc["measurements"]) >= seen


def test_a_signal_before_anything_was_measured_is_one_line(tmp_path):
    proc, _ = start(tmp_path, "bandwidth")
    deadline = time.monotonic() + 60
    while not handles(proc.pid, signal.SIGTERM) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert "Traceback" not in stderr
    assert "interrupted by SIGTERM" in stderr.strip().splitlines()[-1]


CHILD = """
import multiprocessing as mp, os, sys, time
from probes.interrupt import die_with_parent

def child(parent):
    die_with_parent(parent)
    time.sleep(60)

if __name__ == "__main__":
    p = mp.get_context("spawn").Process(target=child, args=(os.getpid(),))
    p.start()
    print(p.pid, flush=True)
    time.sleep(60)
"""


def test_a_child_dies_with_its_parent_even_on_sigkill(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(CHILD)
    parent = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    child = int(parent.stdout.readline())
    time.sleep(0.5)  # past die_with_parent, most likely; if not, it sees its parent gone and exits at once
    parent.kill()
    parent.wait()
    assert not wait_dead([child]), "the child outlived its SIGKILLed parent"


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def listening(pids: list[int]) -> list[str]:
    """Local addresses ('0100007F:9A7D', hex as in /proc/net/tcp) of the TCP sockets `pids` listen on."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # state LISTEN
                out.append(f[1])
    return out


LOOPBACK = ("0100007F:", "00000000000000000000000001000000:")  # 127.0.0.1, ::1


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_dead(pids: list[int], seconds: float = 10.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


@pytest.mark.slow
def test_collective_ranks_listen_on_loopback_only_and_die_with_a_sigkilled_run(tmp_path):
    proc, out = start(tmp_path, "collectives")
    deadline = time.monotonic() + 120
    while saved_cases(out, "collectives") < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    ranks = [p for p in children(proc.pid) if b"multiprocessing" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(ranks) >= 2, ranks
    addresses = listening(ranks)  # the rendezvous store and gloo's pairs
    assert addresses and all(a.startswith(LOOPBACK) for a in addresses), addresses
    proc.kill()  # SIGKILL: the run has no chance to tear its ranks down
    proc.communicate()
    assert not wait_dead(ranks), "ranks outlived their SIGKILLed parent"
