"""The time estimate of a profile on a GPU node, from case counts and budgets (python -m probes.estimate)."""

from __future__ import annotations

from helpers import REPO, cli

from probes.config import load_config
from probes.estimate import WORKER_STARTUP_S, estimate_seconds, main


def test_quick_on_eight_gpus_fits_its_time_budget_with_per_gpu_probes_at_once():
    """Quick on 8 GPUs (its upper bound: every case spends its budget) within the profile's own time budget,
    150 s, which the runner holds (probes.schedule); all-to-all, the FP4/MXFP8 peaks and latency came in
    at 123 s from 119 s."""
    cfg = load_config(REPO / "bench.toml", "quick", "gpu")
    at_once, one_by_one = estimate_seconds(cfg, 8), estimate_seconds(cfg, 8, sequential=True)
    assert sum(at_once.values()) <= cfg.timing.profile_budget_s == 150
    one = estimate_seconds(cfg, 1)
    for name in ("bandwidth", "matmul"):  # the first GPU's cases, plus starting the workers
        assert at_once[name] == one[name] + WORKER_STARTUP_S < one_by_one[name]
    assert at_once["hostlink"] == one_by_one["hostlink"] == 8 * one["hostlink"]  # shared links: in turn


def test_per_gpu_probes_scale_with_the_gpu_count_and_decode_does_not():
    cfg = load_config(REPO / "bench.toml", "quick", "gpu")
    one, eight = estimate_seconds(cfg, 1), estimate_seconds(cfg, 8, sequential=True)
    assert set(one) == set(cfg.probes)
    for name in ("bandwidth", "hostlink"):
        assert eight[name] == 8 * one[name]
    assert eight["matmul"] > one["matmul"]  # Triton compiles once per process, autotunes per GPU
    assert eight["decode"] == one["decode"]  # the decode probe measures the first GPU only
    per_case = cfg.timing.warmup_s + cfg.timing.case_budget_s
    # the per-op overhead (eager and in a CUDA graph), then per weight format and batch: attention, head, layers
    assert one["decode"] == (2 + 3 * len(cfg.decode.dtypes) * len(cfg.decode.batches)) * per_case


def test_the_command_prints_the_profile_then_the_estimate(capsys):
    assert main(["--profile", "quick", "--gpus", "8"]) == 0
    out, err = capsys.readouterr()
    assert (
        '"profile": "quick"' in out and "on 8 GPUs, per-GPU probes on all at once" in err and "total" in err
    )
    assert cli(main, ["--gpus", "0"]) == 2
    assert "--gpus: '0': must be at least 1" in capsys.readouterr().err
    assert main(["--gpus", "8", "--sequential"]) == 0
    assert "on 8 GPUs, one after another" in capsys.readouterr().err


def test_quick_on_a_cpu_box_budgets_under_a_minute():
    """The quick CPU profile's case budgets (the part of its time that grows with the profile) leave room
    under 90 s for imports, building operands and references: ~86 s on an idle 2-core box."""
    est = estimate_seconds(load_config(None, "quick", "cpu"), 0)
    assert sum(est.values()) <= 60
