"""Latency (probes/latency.py): the pointer chase wired through measure_case (the Triton interpreter stands in for
a GPU on the CPU), seconds per dependent load, headlines named for their level; on a CPU run, one skip with why."""

from __future__ import annotations

import pytest
import torch
from helpers import fast_timing_toml, requires_cuda

from analysis.headline import Headline
from probes import latency
from probes.config import load_config
from probes.context import Context
from probes.nvml import NoNvml

CPU = torch.device("cpu")
TOML = (
    fast_timing_toml(0.05)
    + """
[latency]
working_set_cache_multiples = [0.0001, 0.0004, 4.0]
chase_steps = 40
copy_bytes = 8
[profiles.t]
probes = ["latency"]
"""
)


def ctx_for(tmp_path) -> Context:
    p = tmp_path / "l.toml"
    p.write_text(TOML)
    return Context(cfg=load_config(p), devices=[CPU], nvml=NoNvml())


def test_a_cpu_run_skips_with_the_reason(tmp_path):
    ctx = ctx_for(tmp_path)
    (m,) = latency.run(ctx)
    assert m.status == "skipped" and "no device memory hierarchy" in m.error and latency.n_cases(ctx) == 1


def test_the_chase_cases_give_seconds_per_load_and_name_their_level(tmp_path, monkeypatch):
    monkeypatch.setattr(latency, "triton_unavailable_reason", lambda device: None)  # the interpreter runs it
    monkeypatch.setattr(latency, "cache_bytes", lambda device: 64 << 20)  # a 64 MiB "L2"
    ms = latency.chase_cases(ctx_for(tmp_path), CPU)
    assert [m.status for m in ms] == ["ok"] * 3, [m.error for m in ms]
    assert [m.headline for m in ms] == [None, "latency_l2_chase", "latency_dram_chase"]
    for m in ms:
        assert m.unit == "seconds" and m.params["seconds_per_load"] == m.value
        assert m.value == pytest.approx(m.timing["stats"]["median_s"] / 40)
        assert m.verification["status"] == "passed"
    assert Headline.parse("latency_dram_chase") == Headline.latency("dram", "chase")
    assert Headline.parse("latency_h2d_pinned").resource == "latency"


@requires_cuda
def test_gpu_latencies_are_microseconds_or_less(tmp_path):
    p = tmp_path / "l.toml"
    p.write_text(TOML.replace("chase_steps = 40", "chase_steps = 2000"))
    ctx = Context(cfg=load_config(p), devices=[torch.device("cuda", 0)], nvml=NoNvml())
    ms = {m.headline: m for m in latency.run(ctx) if m.headline}
    dram = ms["latency_dram_chase"]
    assert dram.status == "ok" and 50e-9 < dram.value < 5e-6
    assert ms["latency_l2_chase"].value < dram.value
    assert 1e-6 < ms["latency_h2d_pinned"].value < 1e-3
