"""What a probe is handed (`Context`), and the one way a probe measures a case (`measure_case`).

`measure_case` is where the measurement method lives, so no probe re-implements it: poison the output, run
once and check it against the reference before any time counts; time with `probes.timing.time_fn` while NVML
telemetry is sampled; poison, run and check again after the timed repetitions; derive the figure from the
median. A wrong
result, an out-of-memory or any other exception becomes an error recorded for that case, never a number.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from analysis.formulas import energy_per_unit
from analysis.rundoc import Measurement, error_line
from probes.config import RunConfig, TimingConfig
from probes.device import device_context
from probes.nvml import Nvml, TelemetrySampler
from probes.timing import Agree, CacheFlush, Split, synchronize, time_fn


@dataclass
class Context:
    """Shared state of a run: config, devices, NVML session and a progress callback."""

    cfg: RunConfig
    devices: list[torch.device]
    nvml: Nvml
    progress: Callable[[str], None] = field(default=lambda desc: None)
    flushes: dict[str, CacheFlush] = field(default_factory=dict)
    options: dict[str, Any] = field(
        default_factory=dict
    )  # command-line settings a probe reads (--world-size, ...)
    # Every finished case goes here as soon as it is measured, so an interrupted run can save it.
    keep: Callable[[Measurement], None] = field(default=lambda m: None)

    def trimmed(self) -> str | None:
        """Why an optional case (one no headline comes from) is left out: this probe has used its share of the
        profile's time budget (probes.runner.Schedule sets `options["deadline"]`, a time.time()). None: run it."""
        deadline = self.options.get("deadline")
        if deadline is None or time.time() < float(deadline):
            return None
        return str(self.options.get("trim_reason") or "trimmed: the profile's time budget is spent")

    def skip(
        self,
        probe: str,
        case: str,
        device: torch.device,
        params: dict[str, Any],
        reason: str,
        status: str = "skipped",
    ) -> Measurement:
        """A case not measured (see `skipped`), handed to `keep` at once like a measured one: a run stopped
        by Ctrl-C keeps the skip records of what the probe had already decided, not only its figures."""
        m = skipped(probe, case, device, params, reason, status)
        self.keep(m)
        return m

    def cache_flush(self, device: torch.device) -> CacheFlush:
        """The one L2-flush buffer of a device, allocated on first use and kept for the run."""
        key = str(device)
        if key not in self.flushes:
            self.flushes[key] = CacheFlush(device)
        return self.flushes[key]


Built = tuple[Callable[[], Any], Callable[[], str | None], Callable[[], None], int]


def measure_built(
    ctx: Context,
    *,
    probe: str,
    case: str,
    device: torch.device,
    params: dict[str, Any],
    build: Callable[[], Built],
    **kwargs: Any,
) -> Measurement:
    """`measure_case` for a case whose buffers are made by `build()` -> (fn, check, poison, bytes moved).

    Making the buffers can fail on its own (pinned memory over `ulimit -l`, out of memory, no peer access):
    that is recorded as the case's error, and the buffers are released before the next case.
    """
    try:
        with device_context(device):
            fn, check, poison, moved = build()
    except Exception as exc:
        ctx.progress(f"{probe}: {case}")
        _release(device)
        m = skipped(probe, case, device, params, error_line(exc), status="error")
        ctx.keep(m)
        return m
    return measure_case(
        ctx,
        probe=probe,
        case=case,
        device=device,
        params=params,
        fn=fn,
        check=check,
        poison=poison,
        bytes_moved=moved,
        **kwargs,
    )


def skipped(
    probe: str, case: str, device: torch.device, params: dict[str, Any], reason: str, status: str = "skipped"
) -> Measurement:
    """A case that was not measured: `skipped` (cannot run here, and why) or `error` (failed before timing)."""
    return Measurement(probe=probe, case=case, device=str(device), params=params, status=status, error=reason)


def measure_case(ctx: Context, *, steady_cv: float | None = None, **kwargs: Any) -> Measurement:
    """Check, time and check again one case; see the module docstring. Never raises for a bad case.

    `steady_cv`: a case whose samples spread wider than this (coefficient of variation) was disturbed (another
    process took a core for a while: on a 2-core box one busy core slows a 2-thread kernel several-fold); it
    is timed again, at most twice more, and the attempt with the lowest median is kept, the others' spread
    noted in its params. The finished case is handed to `ctx.keep` at once (the runner saves it)."""
    m = _measure(ctx, **kwargs)
    split = kwargs.get("split")
    attempts = [(m, split.inside_s[:], split.host_s[:]) if split is not None else (m, [], [])]
    while steady_cv is not None and _spread(m) > steady_cv and len(attempts) < 3:
        if split is not None:
            split.clear()
        m = _measure(ctx, **kwargs)
        attempts.append((m, split.inside_s[:], split.host_s[:]) if split is not None else (m, [], []))
    if len(attempts) > 1:
        ok = [a for a in attempts if a[0].status == "ok"]
        m, inside, host = min(ok, key=lambda a: a[0].timing["stats"]["median_s"]) if ok else attempts[-1]
        m.params["retimed"] = [round(_spread(a[0]), 3) for a in attempts]
        if split is not None:
            split.inside_s[:], split.host_s[:] = inside, host
    ctx.keep(m)
    return m


def _spread(m: Measurement) -> float:
    return float(m.timing["stats"]["cv"]) if m.status == "ok" and m.timing else 0.0


def _measure(
    ctx: Context,
    *,
    probe: str,
    case: str,
    device: torch.device,
    params: dict[str, Any],
    fn: Callable[[], Any],
    check: Callable[[], str | None] | None,
    poison: Callable[[], None] | None = None,
    bytes_moved: int | None = None,
    flops: int | None = None,
    flush_cache: bool = False,
    headline: str | None = None,
    timing: TimingConfig | None = None,
    agree: Agree | None = None,
    ops_per_call: int = 1,
    split: Split | None = None,
) -> Measurement:
    m = Measurement(probe=probe, case=case, device=str(device), params=dict(params), headline=headline)
    if bytes_moved is not None:
        m.params["bytes_moved"] = int(bytes_moved)
    if flops is not None:
        m.params["flops"] = int(flops)
    ctx.progress(f"{probe}: {case}")
    try:
        with device_context(device):  # events, side streams and Triton launches on the measured device
            if check is not None:
                problem = _verify(device, fn, check, poison)
                if problem:
                    return _fail(m, f"wrong result before timing: {problem}")
            flush = ctx.cache_flush(device) if flush_cache else None
            with TelemetrySampler(ctx.nvml, device, ctx.cfg.timing.telemetry_interval_s) as tel:
                timing_result = time_fn(
                    fn, device, timing or ctx.cfg.timing, flush, agree, ops_per_call, split
                )
            m.telemetry = tel.summary()
            m.timing = timing_result.to_dict()
            if check is not None:
                # Verify once more from a fresh state: timed repetitions of an in-place op (an all-reduce)
                # legitimately leave values that no longer match the reference.
                problem = _verify(device, fn, check, poison)
                if problem:
                    return _fail(m, f"wrong result after timing: {problem}")
                m.verification = {"status": "passed"}
    except torch.OutOfMemoryError as exc:
        _release(device)
        m.status, m.error = "error", f"out of memory: {error_line(exc).split(': ', 1)[-1]}"
        return m
    except Exception as exc:
        _release(device)
        m.status = "error"
        m.error = error_line(exc)
        m.verification = {"status": "not-run", "traceback": traceback.format_exc(limit=4)}
        return m
    median = timing_result.stats.median_s
    if flops is not None:
        m.value, m.unit = flops / median, "flop_per_s"
    elif bytes_moved is not None:
        m.value, m.unit = bytes_moved / median, "bytes_per_s"
    else:
        m.value, m.unit = median, "seconds"
    energy = (m.telemetry or {}).get("energy")
    if energy and energy.get("measured"):
        energy.update(energy_per_unit(energy["avg_power_w"], median, flops, bytes_moved))
    return m


def _verify(
    device: torch.device,
    fn: Callable[[], Any],
    check: Callable[[], str | None],
    poison: Callable[[], None] | None,
) -> str | None:
    if poison is not None:
        poison()
    fn()
    synchronize(device)
    return check()


def concurrently(
    device: torch.device, ops: list[tuple[torch.device, Callable[[], Any]]]
) -> Callable[[], None]:
    """One call that runs each op on its own stream of its own device, so copy engines overlap.

    The side streams wait for `device`'s current stream and it waits for them, so the timing events recorded
    there span all the ops, from the first start to the last end.
    """
    streams = [torch.cuda.Stream(d) for d, _ in ops]

    def run() -> None:
        cur = torch.cuda.current_stream(device)
        for s in streams:
            s.wait_stream(cur)
        for s, (_d, op) in zip(streams, ops, strict=True):
            with torch.cuda.stream(s):
                op()
        for s in streams:
            cur.wait_stream(s)

    return run


def _fail(m: Measurement, detail: str) -> Measurement:
    m.status, m.error = "error", detail
    m.verification = {"status": "failed", "detail": detail}
    return m


def _release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
