"""The one timing primitive every probe uses.

GPU work is asynchronous: a host clock read after a launch measures the launch, not the kernel. On CUDA (and
ROCm, which torch also calls "cuda") each repetition is bracketed by device events recorded on the current
stream, so the figure is device time; elsewhere the device is synchronized and a monotonic host clock is
read. Warm-up runs by time, not by count, so clocks ramp and caches settle whatever the case size.
Repetitions continue until the relative standard error of the mean is below the target, the case's time
budget is spent, or the repetition cap is reached; statistics come from the kept raw samples.

Short work (a repetition under 50 us) is timed k back-to-back repetitions per window, k chosen for a ~1 ms
window and agreed by every rank of a collective, as nccl-tests does: one window per tiny kernel would measure
the gap before its launch too (an L2-sized copy would read below HBM, a small all-reduce would look slower
than it is). The mode and k are recorded in the timing block.

Anything meant to measure DRAM can ask for the last-level cache to be flushed between repetitions
(`CacheFlush`: a buffer of twice the cache, allocated once, written outside the timed window).

A `Split` divides each repetition's host time in two: the time inside calls it wraps (a decode step's GEMMs and
attention) and the rest (Python, dispatch, the small ops between them). On a CPU the rest is the small ops'
real cost; on a GPU, where the wrapped calls return once their kernels are queued, it is the host time of
issuing everything else, and the repetition's whole host time (`host_samples_s`) is what the step costs the
host beside its device time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from probes.config import TimingConfig
from probes.device import cache_bytes, device_context


@dataclass(frozen=True)
class Stats:
    """Summary of raw samples, in seconds. cv = std/mean; rse = std/sqrt(n)/mean (relative standard error)."""

    n: int
    median_s: float
    mean_s: float
    min_s: float
    max_s: float
    p10_s: float
    p90_s: float
    std_s: float
    cv: float
    rse: float


def summarize(samples: Sequence[float]) -> Stats:
    """Statistics of raw samples (sample std, ddof=1; percentiles by linear interpolation)."""
    if len(samples) == 0:
        raise ValueError("summarize() needs at least one sample")
    a = np.asarray(samples, dtype=np.float64)
    n = a.size
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if n > 1 else 0.0
    return Stats(
        n=n,
        median_s=float(np.median(a)),
        mean_s=mean,
        min_s=float(a.min()),
        max_s=float(a.max()),
        p10_s=float(np.percentile(a, 10)),
        p90_s=float(np.percentile(a, 90)),
        std_s=std,
        cv=std / mean if mean > 0 else math.inf,
        rse=std / math.sqrt(n) / mean if mean > 0 else math.inf,
    )


@dataclass(frozen=True)
class Timing:
    """What `time_fn` measured: statistics, the raw samples, and how they were taken."""

    stats: Stats
    samples_s: tuple[float, ...]
    method: str  # "device-events" or "host-clock"
    warmup_s: float
    warmup_reps: int
    stop_reason: str  # "target-rse", "budget", "max-reps"
    cache_flushed: bool
    mode: str = "per-rep"  # "per-rep": one window per repetition; "batched": k back-to-back per window
    reps_per_sample: int = 1  # k: each sample is one window's time / k
    ops_per_call: int = 1  # each call ran this many copies of the op on distinct operands; samples are per op

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["samples_s"] = list(self.samples_s)
        return d


def synchronize(device: torch.device) -> None:
    """Wait for all work queued on `device` (a no-op on the CPU, whose torch ops are synchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type != "cpu":
        mod = getattr(torch, device.type, None)
        sync = getattr(mod, "synchronize", None)
        if sync is not None:
            sync()


class Split:
    """Per repetition: host seconds inside the wrapped calls, and the repetition's whole host seconds."""

    def __init__(self) -> None:
        self.inside_s: list[float] = []
        self.host_s: list[float] = []
        self._inside = 0.0
        self._t0 = 0.0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn` with the host time of each call counted as inside."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._inside += time.perf_counter() - t

        return timed

    def start(self) -> None:
        self._inside, self._t0 = 0.0, time.perf_counter()

    def stop(self) -> None:
        self.host_s.append(time.perf_counter() - self._t0)
        self.inside_s.append(self._inside)

    def clear(self) -> None:
        self.inside_s.clear()
        self.host_s.clear()

    def outside_s(self) -> list[float]:
        """Host seconds of each repetition outside the wrapped calls."""
        return [max(0.0, h - i) for h, i in zip(self.host_s, self.inside_s, strict=True)]


class CacheFlush:
    """Evicts the last-level cache by writing a buffer twice its size; allocated once, reused every call."""

    def __init__(self, device: torch.device, nbytes: int | None = None) -> None:
        self.device = device
        self.nbytes = int(nbytes if nbytes is not None else 2 * cache_bytes(device))
        self._buf = torch.empty(self.nbytes // 4, dtype=torch.int32, device=device)
        self._value = 0

    def __call__(self) -> None:
        # A changing value keeps the write from being elided or compressed away.
        self._value = (self._value + 1) % 1_000_003
        self._buf.fill_(self._value)


Agree = Callable[[list[int]], list[int]]


def time_fn(
    fn: Callable[[], Any],
    device: torch.device,
    cfg: TimingConfig,
    flush: CacheFlush | None = None,
    agree: Agree | None = None,
    ops_per_call: int = 1,
    split: Split | None = None,
) -> Timing:
    """Time `fn()` on `device`: warm up by time, then repeat adaptively; see the module docstring.

    `split`: records each timed repetition's host time inside and outside the calls it wraps (see Split).

    `ops_per_call`: `fn` runs the measured op that many times, each on its own copy of the operands (rotating
    cold weights, as a decode step streams a different weight into every GEMM); the samples and statistics
    are per op. One flush before the call then costs its fixed start-up once per `ops_per_call` ops.

    `agree` makes every decision collective, for `fn`s that are collectives themselves (all ranks must call
    them equally often): it takes this rank's integer flags and returns their element-wise maximum over all
    ranks. Warm-up ends when every rank is warm; the timed loop starts on all ranks together (the agreement
    doubles as the barrier); it stops when every rank met the RSE target or any rank spent its budget.
    """
    with device_context(device):  # events record on the device's stream; Triton launches on it
        timing = _time_fn(fn, device, cfg, flush, agree, split)
    if ops_per_call == 1:
        return timing
    samples = tuple(t / ops_per_call for t in timing.samples_s)
    return replace(timing, stats=summarize(samples), samples_s=samples, ops_per_call=ops_per_call)


def _time_fn(
    fn: Callable[[], Any],
    device: torch.device,
    cfg: TimingConfig,
    flush: CacheFlush | None,
    agree: Agree | None,
    split: Split | None = None,
) -> Timing:
    consensus = agree or (lambda flags: flags)
    t0 = time.perf_counter()
    warm = 0
    while True:
        fn()
        synchronize(device)
        warm += 1
        (still_warming,) = consensus([int(time.perf_counter() - t0 < cfg.warmup_s)])
        if not still_warming:
            break
    warmup_s = time.perf_counter() - t0

    samples: list[float] = []
    use_events = device.type == "cuda"
    start = time.perf_counter()
    stop_reason = "max-reps"
    batch, k, calibrating = min(CALIBRATION_REPS, cfg.max_reps), 1, True
    while len(samples) < cfg.max_reps:
        n = min(batch, cfg.max_reps - len(samples))
        batch_start = time.perf_counter()
        if use_events:
            samples.extend(_event_batch(fn, n, flush, k, split))
        else:
            samples.extend(_host_batch(fn, device, n, flush, k, split))
        if calibrating:
            # Short work: one window per repetition measures the launch gap too. Time k back-to-back
            # repetitions per window instead (nccl-tests' method), k agreed by every rank. A flushed case keeps
            # one window per repetition: the flush queued before it keeps the device busy through the launch.
            calibrating = False
            (k,) = consensus([1 if flush is not None else reps_per_window(float(np.median(samples)))])
            if k > 1:
                samples.clear()
                if split is not None:
                    split.clear()
                continue
        enough = len(samples) >= cfg.min_reps
        rse_missed = int(not (enough and summarize(samples).rse <= cfg.target_rse))
        # The budget ends a case only once it has min_reps samples: statistics of two samples are not a
        # measurement. (Probes keep single runs below case_budget_s / min_reps, so this stays bounded.)
        over_budget = int(enough and time.perf_counter() - start >= cfg.case_budget_s)
        # Grow the batch so tiny kernels are not dominated by the per-batch sync and statistics, but never
        # past what the budget can still afford.
        # What one more sample costs in wall time: the flush before it and the sync after it included (a
        # flush of a CPU's last-level cache can take 100x the GEMM it precedes).
        per_sample = max((time.perf_counter() - batch_start) / n, samples[-1] * k, 1e-7)
        remaining = cfg.case_budget_s - (time.perf_counter() - start)
        proposed = max(1, cfg.min_reps - len(samples), min(batch * 2, 64, int(remaining / per_sample)))
        rse_missed, over_budget, batch = consensus([rse_missed, over_budget, proposed])
        if not rse_missed:
            stop_reason = "target-rse"
            break
        if over_budget:
            stop_reason = "budget"
            break
    return Timing(
        stats=summarize(samples),
        samples_s=tuple(samples),
        method="device-events" if use_events else "host-clock",
        warmup_s=warmup_s,
        warmup_reps=warm,
        stop_reason=stop_reason,
        cache_flushed=flush is not None,
        mode="batched" if k > 1 else "per-rep",
        reps_per_sample=k,
    )


SHORT_S = 50e-6  # a repetition shorter than this is timed k at a time...
WINDOW_S = 1e-3  # ...k chosen so one window lasts about this long
MAX_REPS_PER_WINDOW = 1000
CALIBRATION_REPS = 3


def reps_per_window(rep_s: float) -> int:
    """k for a repetition of `rep_s` seconds: 1 at or above SHORT_S, else enough for a ~1 ms window."""
    if rep_s >= SHORT_S:
        return 1
    return max(2, min(MAX_REPS_PER_WINDOW, math.ceil(round(WINDOW_S / max(rep_s, 1e-9), 6))))


def _event_batch(
    fn: Callable[[], Any], n: int, flush: CacheFlush | None, k: int = 1, split: Split | None = None
) -> list[float]:
    """n samples, each one event window around k back-to-back calls, divided by k."""
    pairs = []
    for _ in range(n):
        if flush is not None:
            flush()
        s = torch.cuda.Event(enable_timing=True)
        e = torch.cuda.Event(enable_timing=True)
        s.record()
        if split is not None:
            split.start()
        for _ in range(k):
            fn()
        if split is not None:
            split.stop()  # the host time of issuing the calls: the device may still be running them
        e.record()
        pairs.append((s, e))
    pairs[-1][1].synchronize()
    return [s.elapsed_time(e) * 1e-3 / k for s, e in pairs]


def _host_batch(
    fn: Callable[[], Any],
    device: torch.device,
    n: int,
    flush: CacheFlush | None,
    k: int = 1,
    split: Split | None = None,
) -> list[float]:
    """n samples, each a synchronized host-clock window around k back-to-back calls, divided by k."""
    out = []
    for _ in range(n):
        if flush is not None:
            flush()
        synchronize(device)
        if split is not None:
            split.start()
        s = time.perf_counter()
        for _ in range(k):
            fn()
        if split is not None:
            split.stop()
        synchronize(device)
        out.append((time.perf_counter() - s) / k)
    return out


def sync_clock() -> float:
    """A host clock that first waits for the current GPU's queued work.

    For timers outside this module that read a host clock around device work: pytest-benchmark's
    `@pytest.mark.benchmark(timer=sync_clock)` or `--benchmark-timer probes.timing.sync_clock`.
    """
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()
