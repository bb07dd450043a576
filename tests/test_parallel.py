"""Per-GPU probes on every device at once (probes/parallel.py): real spawned processes on CPU devices, merged
in device order, a dead or failing worker costing only its own device."""

from __future__ import annotations

import pytest
import torch
from helpers import requires_cuda

from probes import Probe
from probes.config import load_config
from probes.parallel import run_per_device, runs_in_parallel

FAKE = Probe("fake", "fake_per_device_probe", "a test probe")
CPUS = [torch.device("cpu")] * 3


def run(options: dict, kept: list | None = None) -> tuple[list[dict], list[str]]:
    seen: list[str] = []
    keep = kept.append if kept is not None else (lambda m: None)
    ms = run_per_device(FAKE, load_config(None, "quick", "cpu"), CPUS, options, seen.append, keep)
    return ms, seen


def test_results_come_back_in_device_order_with_progress():
    kept: list[dict] = []
    ms, seen = run({}, kept)
    assert [m["params"]["index"] for m in ms] == [0, 0, 1, 1, 2, 2]  # workers finished 2, 1, 0
    assert all(m["status"] == "ok" for m in ms)
    assert sorted(seen) == ["fake on cpu #0", "fake on cpu #1", "fake on cpu #2"]
    # every first case reached the parent (the runner saves it) as soon as it was measured
    assert sorted(m["params"]["index"] for m in kept) == [0, 1, 2]


@pytest.mark.parametrize(
    ("option", "why"),
    [("die_at", "its process exited with code 3"), ("raise_at", "RuntimeError: a driver fault")],
)
def test_a_dead_or_failing_worker_costs_only_its_device(option, why):
    ms, _ = run({option: 1})
    assert [m["status"] for m in ms] == ["ok", "ok", "ok", "error", "ok", "ok"]
    assert ms[3]["error"] == f"fake on cpu failed: {why}"
    # the failing device keeps the case it finished before it died
    assert [(m["case"], m["params"].get("index")) for m in ms][2:4] == [("first", 1), ("all", None)]


def test_a_hung_worker_is_killed_and_costs_only_its_device(monkeypatch):
    import time

    import probes.parallel as parallel

    monkeypatch.setattr(parallel, "silence_limit_s", lambda cfg: 3.0)
    t0 = time.monotonic()
    ms, _ = run({"hang_at": 2})
    assert time.monotonic() - t0 < 30
    assert [m["status"] for m in ms] == ["ok", "ok", "ok", "ok", "ok", "error"]
    assert ms[5]["case"] == "all"
    assert ms[5]["error"] == "fake on cpu failed: hung: no word from its process for 3 s (killed)"


def test_only_per_gpu_probes_on_several_devices_run_at_once():
    two = [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert runs_in_parallel("bandwidth", two, sequential=False)
    assert runs_in_parallel("matmul", two, sequential=False)
    assert not runs_in_parallel("matmul", two, sequential=True)
    assert not runs_in_parallel("matmul", two[:1], sequential=False)
    for name in ("hostlink", "collectives", "decode"):  # shared links, or their own process layout
        assert not runs_in_parallel(name, two, sequential=False)


@requires_cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_bandwidth_on_every_gpu_at_once():
    cfg = load_config(None, "quick", "gpu")
    devices = [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    ms = run_per_device("bandwidth", cfg, devices, {}, lambda desc: None)
    assert {m["device"] for m in ms if m["status"] == "ok"} == {str(d) for d in devices}
