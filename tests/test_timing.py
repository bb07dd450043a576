"""The timing primitive: statistics against hand-computed values, a known sleep, the stop rules."""

from __future__ import annotations

import math
import time

import pytest
import torch
from helpers import RecordingDeviceContext, requires_cuda, timing_config

from probes.device import cache_bytes
from probes.timing import CacheFlush, reps_per_window, summarize, time_fn

CPU = torch.device("cpu")


def test_summarize_matches_hand_computed_values():
    s = summarize([5.0, 1.0, 4.0, 2.0, 3.0])
    assert s.n == 5
    assert s.median_s == 3.0
    assert s.mean_s == 3.0
    assert (s.min_s, s.max_s) == (1.0, 5.0)
    # numpy's linear percentile: position 0.1 * (5 - 1) = 0.4 between 1 and 2 -> 1.4; 0.9 * 4 = 3.6 -> 4.6
    assert s.p10_s == pytest.approx(1.4)
    assert s.p90_s == pytest.approx(4.6)
    # sample variance: (4 + 1 + 0 + 1 + 4) / 4 = 2.5
    assert s.std_s == pytest.approx(math.sqrt(2.5))
    assert s.cv == pytest.approx(math.sqrt(2.5) / 3)
    assert s.rse == pytest.approx(math.sqrt(2.5) / math.sqrt(5) / 3)


def test_summarize_even_count_median_and_single_sample():
    assert summarize([4.0, 1.0, 3.0, 2.0]).median_s == 2.5
    one = summarize([0.25])
    assert (one.n, one.median_s, one.std_s, one.cv, one.rse) == (1, 0.25, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        summarize([])


def test_time_fn_measures_a_known_sleep():
    cfg = timing_config(warmup_s=0.02, min_reps=5, max_reps=8, target_rse=1e-9, case_budget_s=10.0)
    t = time_fn(lambda: time.sleep(0.02), CPU, cfg)
    assert t.method == "host-clock"
    assert t.stats.n == len(t.samples_s) == 8
    assert t.stop_reason == "max-reps"
    # sleep never returns early; the scheduler may add a little on a loaded 2-core box
    assert 0.02 <= t.stats.median_s < 0.03
    assert t.stats.min_s >= 0.02
    assert t.warmup_reps >= 1 and t.warmup_s >= 0.02


def test_time_fn_warms_up_by_time_not_count():
    calls = []
    cfg = timing_config(warmup_s=0.05, min_reps=1, max_reps=1, target_rse=1.0, case_budget_s=1.0)
    t = time_fn(lambda: (calls.append(1), time.sleep(0.005)), CPU, cfg)
    assert t.warmup_reps >= 5  # 0.05 s of 5 ms calls, not a fixed count
    assert len(calls) == t.warmup_reps + t.stats.n


def test_time_fn_stops_on_target_rse_at_min_reps_for_a_steady_case():
    cfg = timing_config(warmup_s=0.0, min_reps=4, max_reps=1000, target_rse=0.2, case_budget_s=10.0)
    t = time_fn(lambda: time.sleep(0.005), CPU, cfg)
    assert t.stop_reason == "target-rse"
    assert 4 <= t.stats.n < 20


def test_time_fn_stops_when_the_budget_is_spent():
    state = {"i": 0}

    def noisy() -> None:
        state["i"] += 1
        time.sleep(0.001 if state["i"] % 2 else 0.01)  # CV near 1: the RSE target cannot be met

    cfg = timing_config(warmup_s=0.0, min_reps=2, max_reps=100000, target_rse=1e-6, case_budget_s=0.3)
    t0 = time.perf_counter()
    t = time_fn(noisy, CPU, cfg)
    assert t.stop_reason == "budget"
    assert time.perf_counter() - t0 < 0.3 + 0.2  # the batch never outgrows what the budget affords


def test_cache_flush_buffer_is_allocated_once_and_written_each_call():
    f = CacheFlush(CPU, nbytes=1 << 20)
    ptr = f._buf.data_ptr()
    f()
    first = int(f._buf[0])
    f()
    assert f._buf.data_ptr() == ptr
    assert int(f._buf[0]) != first
    assert f._buf.numel() * 4 == 1 << 20
    assert CacheFlush(CPU).nbytes == 2 * cache_bytes(CPU)


def test_time_fn_flush_runs_outside_the_timed_window():
    class SlowFlush:
        calls = 0

        def __call__(self) -> None:
            SlowFlush.calls += 1
            time.sleep(0.02)

    cfg = timing_config(warmup_s=0.0, min_reps=3, max_reps=3, target_rse=1e-9, case_budget_s=10.0)
    t = time_fn(lambda: None, CPU, cfg, flush=SlowFlush())
    assert SlowFlush.calls == 3
    assert t.cache_flushed
    assert t.stats.max_s < 0.01


@requires_cuda
def test_cuda_events_time_a_known_device_sleep():
    dev = torch.device("cuda", 0)
    cycles = 10_000_000
    torch.cuda._sleep(cycles)  # warm the spin kernel
    cfg = timing_config(warmup_s=0.05, min_reps=5, max_reps=20, target_rse=0.01, case_budget_s=2.0)
    t = time_fn(lambda: torch.cuda._sleep(cycles), dev, cfg)
    assert t.method == "device-events"
    clock_hz = torch.cuda.clock_rate(dev) * 1e6 if hasattr(torch.cuda, "clock_rate") else None
    assert t.stats.median_s > 0
    if clock_hz:
        # the spin kernel counts SM clocks: its time is cycles / clock (clocks may boost above base)
        assert 0.3 * cycles / clock_hz < t.stats.median_s < 3 * cycles / clock_hz


@requires_cuda
def test_cuda_l2_flush_makes_a_cache_sized_read_slower():
    dev = torch.device("cuda", 0)
    l2 = cache_bytes(dev)
    x = torch.rand(l2 // 8, device=dev)  # half the L2: cache-resident unless flushed
    cfg = timing_config(warmup_s=0.05, min_reps=20, max_reps=200, target_rse=0.01, case_budget_s=1.0)
    warm = time_fn(lambda: x.sum(), dev, cfg)
    cold = time_fn(lambda: x.sum(), dev, cfg, flush=CacheFlush(dev))
    assert cold.cache_flushed
    assert cold.stats.median_s > warm.stats.median_s


def test_amd_infinity_cache_counts_as_the_last_level_cache(monkeypatch):
    """MI300X: torch reports the 4 MB L2, but 256 MB of Infinity Cache sits in front of HBM."""
    import types

    props = types.SimpleNamespace(L2_cache_size=4 << 20, gcnArchName="gfx942:sramecc+:xnack-")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: props)
    monkeypatch.setattr(torch.version, "hip", "6.2.0")
    assert cache_bytes(torch.device("cuda", 0)) == 256 << 20
    monkeypatch.setattr(torch.version, "hip", None)
    props.L2_cache_size = 50 << 20  # an H100 under CUDA: the L2 is the last level
    assert cache_bytes(torch.device("cuda", 0)) == 50 << 20


def test_cpu_cache_size_from_sysfs_is_positive():
    assert cache_bytes(CPU) >= 1 << 20


def test_time_fn_decisions_are_collective_when_agreeing():
    """Another rank still warming up, or short of its RSE target, keeps this rank going too."""
    calls = {"agree": 0}

    def other_rank_lags(flags: list[int]) -> list[int]:
        calls["agree"] += 1
        if len(flags) == 1:  # warm-up: the other rank needs three more rounds
            return [max(flags[0], int(calls["agree"] <= 3))]
        _rse_missed, over_budget, batch = flags
        return [1, over_budget, batch]  # the other rank never meets the RSE target

    cfg = timing_config(warmup_s=0.0, min_reps=3, max_reps=50, target_rse=10.0, case_budget_s=0.05)
    t = time_fn(lambda: time.sleep(0.001), CPU, cfg, agree=other_rank_lags)
    assert t.warmup_reps == 4
    assert t.stop_reason == "budget"  # locally the RSE target (10) was met at once
    alone = time_fn(lambda: time.sleep(0.001), CPU, cfg)
    assert alone.stop_reason == "target-rse" and alone.stats.n == 3


def test_every_timing_window_runs_inside_its_devices_context(monkeypatch):
    """With --device cuda:1 the events must sit on cuda:1's stream, not on cuda:0's idle one."""
    import probes.timing as timing_mod

    recording = RecordingDeviceContext()
    monkeypatch.setattr(timing_mod, "device_context", recording)
    time_fn(lambda: None, torch.device("cpu"), timing_config(warmup_s=0.0, min_reps=2, max_reps=2))
    assert recording.entered == ["cpu"]


@requires_cuda
def test_events_on_the_last_gpu_time_that_gpus_work():
    last = torch.device("cuda", torch.cuda.device_count() - 1)
    x = torch.randn(1 << 24, device=last)
    t = time_fn(lambda: x.mul_(1.0), last, timing_config(warmup_s=0.05, min_reps=5, max_reps=20))
    # 64 MiB read + written: well above a microsecond on any GPU, and well below a second
    assert 1e-6 < t.stats.median_s < 1.0 and t.method == "device-events"


@pytest.mark.parametrize(("rep_s", "k"), [(100e-6, 1), (50e-6, 1), (49e-6, 21), (2e-6, 500), (1e-8, 1000)])
def test_short_repetitions_are_timed_k_per_window(rep_s, k):
    assert reps_per_window(rep_s) == k


def test_tiny_work_is_timed_in_batched_windows_and_says_so():
    x = torch.ones(16)
    t = time_fn(
        lambda: x.add_(1.0), torch.device("cpu"), timing_config(warmup_s=0.0, min_reps=5, max_reps=50)
    )
    assert t.mode == "batched" and t.reps_per_sample > 1 and t.stats.n >= 5
    assert t.to_dict()["reps_per_sample"] == t.reps_per_sample
    # each sample is one window / k: a per-repetition figure, far below the 50 us that triggered batching
    assert t.stats.median_s < 50e-6


def test_long_work_and_flushed_work_keep_one_window_per_repetition():
    slow = time_fn(
        lambda: time.sleep(2e-4), torch.device("cpu"), timing_config(warmup_s=0.0, min_reps=3, max_reps=3)
    )
    assert slow.mode == "per-rep" and slow.reps_per_sample == 1
    flush = CacheFlush(torch.device("cpu"), nbytes=1 << 16)
    x = torch.ones(16)
    flushed = time_fn(
        lambda: x.add_(1.0), torch.device("cpu"), timing_config(warmup_s=0.0, min_reps=3, max_reps=3), flush
    )
    assert flushed.mode == "per-rep"  # the flush before each window keeps the device busy through the launch


def test_every_rank_agrees_on_k():
    """Collectives: all ranks must run the same number of repetitions, so k is the maximum over ranks."""
    calls = []

    def agree(flags):
        calls.append(list(flags))
        if len(calls) == 2:  # warm-up ended at call 1; call 2 is the choice of k: another rank wants 40
            return [max(flags[0], 40)]
        return flags

    t = time_fn(
        lambda: time.sleep(2e-4),
        torch.device("cpu"),
        timing_config(warmup_s=0.0, min_reps=3, max_reps=3),
        agree=agree,
    )
    assert calls[1] == [1] and t.reps_per_sample == 40 and t.mode == "batched"


def test_ops_per_call_reports_samples_per_op(monkeypatch):
    import probes.timing as timing

    raw = timing.Timing(
        stats=summarize([4.0, 8.0, 12.0]),
        samples_s=(4.0, 8.0, 12.0),
        method="host-clock",
        warmup_s=0.1,
        warmup_reps=1,
        stop_reason="budget",
        cache_flushed=True,
    )
    monkeypatch.setattr(timing, "_time_fn", lambda *a: raw)
    t = time_fn(lambda: None, CPU, timing_config(), ops_per_call=4)
    assert t.samples_s == (1.0, 2.0, 3.0) and t.stats.median_s == 2.0 and t.stats.n == 3
    assert t.ops_per_call == 4 and t.to_dict()["ops_per_call"] == 4
    assert time_fn(lambda: None, CPU, timing_config()) is raw  # one op per call: untouched
