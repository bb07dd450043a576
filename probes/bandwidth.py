"""Device-memory bandwidth, STREAM-style: read, write, copy and triad over a working-set sweep.

A streaming kernel does no reuse, so its time is bytes / bandwidth of whatever level of the memory hierarchy
holds the working set. Sweeping the working set from well inside the last-level cache (GPU L2, CPU L3) to
many times it shows two plateaus: the cache plateau on the left, the DRAM (HBM, GDDR6, DDR) plateau on the
right. The headline per access pattern is the median over the DRAM-sized cases (>= `dram_min_cache_multiple`
times the cache), so neither a cache-assisted size nor one noisy point sets the node's figure.

Bytes are counted as STREAM does: read = N, write = N, copy = 2N (read + write), triad = 3N (2 reads +
1 write) elements of the dtype; write-allocate traffic is not counted. Variants: torch ops (what a framework
gets) and the Triton kernels of kernels/stream.py (GPU only: on the CPU the Triton interpreter is for
correctness, far too slow to time, so those cases are listed as skipped with the reason). Every output is
poisoned, checked against a float64 reference before its time counts, and checked again after timing.

    python -m probes.bandwidth --device cpu        # or cuda, cuda:1; --profile full for the fine sweep
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import torch

from analysis.headline import Headline
from analysis.rundoc import Measurement, error_line
from analysis.units import fmt_bytes
from probes.config import BandwidthConfig
from probes.context import Context, measure_case
from probes.device import cache_bytes, free_memory_bytes, triton_unavailable_reason
from probes.verify import compare, poison, tolerance

NAME = "bandwidth"
ARRAYS = {"read": 1, "write": 1, "copy": 2, "triad": 3}  # arrays touched = bytes per element moved
NOTE = (
    "bandwidth: bytes counted as STREAM does: read = N, write = N, copy = 2N (read + write), "
    "triad = 3N (2 reads + 1 write) elements; write-allocate traffic not counted. On a CPU, torch writes with "
    "regular stores, so every destination line is also read first: its copy reaches ~0.6 of STREAM's, whose "
    "compiled copy loop becomes glibc's memcpy with non-temporal stores (24 vs 39 GB/s with 2 threads on a "
    "2-core Xeon VM); triad, which no compiler turns into memcpy, agrees with STREAM's"
)
TRIAD_SCALAR = 3.0
WRITE_VALUE = 1.5
# fp32 accumulation of N positive values: pairwise/blocked sums stay within ~log2(N) ulp; 1e-4 is loose
# enough for any correct order of summation and far tighter than a missed or doubled block (1/N_blocks).
SUM_RTOL = 1e-4


ALIGN_BYTES = 256  # every operand starts on a 256-byte boundary...
ALIGN_ELEMENTS = 64  # ...and holds a multiple of 64 elements, so vector loads stay whole


def elements_per_array(numel: int, arrays: int, elem_size: int) -> int:
    """Elements of each of `arrays` views cut from one buffer of `numel` elements, so that every view starts
    256-byte aligned (given an aligned buffer) and holds a multiple of 64 elements. A view at an odd offset
    (numel // 3 for triad) falls back to narrow accesses in torch and Triton alike, and triad reads low."""
    step = math.lcm(ALIGN_ELEMENTS, max(1, ALIGN_BYTES // elem_size))
    return numel // arrays // step * step


def working_sets(cfg: BandwidthConfig, device: torch.device) -> list[tuple[float, int]]:
    """(cache multiple, bytes) for each configured size, rounded to whole 4 KiB pages."""
    cache = cache_bytes(device)
    return [(mult, max(4096, int(mult * cache) // 4096 * 4096)) for mult in cfg.working_set_cache_multiples]


def n_cases(ctx: Context) -> int:
    c = ctx.cfg.bandwidth
    return len(ctx.devices) * len(c.working_set_cache_multiples) * len(c.patterns) * len(c.variants)


def region(mult: float, cfg: BandwidthConfig) -> str:
    if mult <= 1.0:
        return "cache"
    return "dram" if mult >= cfg.dram_min_cache_multiple else "transition"


def run(ctx: Context) -> list[Measurement]:
    """Measure every (device, working set, pattern, variant) of the profile."""
    out: list[Measurement] = []
    for device in ctx.devices:
        out.extend(_run_device(ctx, device))
    return out


def _run_device(ctx: Context, device: torch.device) -> list[Measurement]:
    bw = ctx.cfg.bandwidth
    dtype = getattr(torch, bw.dtype)
    elem = torch.empty((), dtype=dtype).element_size()
    limit = min(bw.max_working_set_bytes, int(bw.max_memory_fraction * free_memory_bytes(device)))
    triton_reason = triton_unavailable_reason(device)
    out: list[Measurement] = []
    # The DRAM sizes first: the headlines come from them, and under a time budget the cache sizes after them
    # are the ones trimmed (probes.schedule).
    sizes = sorted(working_sets(bw, device), key=lambda s: s[0] < bw.dram_min_cache_multiple)
    for mult, ws in sizes:
        base = {
            "dtype": bw.dtype,
            "working_set_bytes": ws,
            "cache_multiple": mult,
            "region": region(mult, bw),
        }
        cases = [(p, v) for p in bw.patterns for v in bw.variants]
        if ws > limit:
            reason = f"working set {ws} B exceeds the limit {limit} B (max_working_set_bytes, max_memory_fraction of free memory)"
            out.extend(_skip_all(ctx, device, cases, base, reason))
            continue
        trimmed = ctx.trimmed() if mult < bw.dram_min_cache_multiple else None
        if trimmed:
            for pattern, variant in cases:  # a case that cannot run here keeps that reason
                why = triton_reason if variant == "triton" and triton_reason else trimmed
                out.extend(_skip_all(ctx, device, [(pattern, variant)], base, why))
            continue
        try:
            buf = torch.empty(ws // elem, dtype=dtype, device=device)
        except torch.OutOfMemoryError as exc:
            error = f"out of memory allocating {ws} B: {error_line(exc)}"
            out.extend(_skip_all(ctx, device, cases, base, error, status="error"))
            continue
        for pattern, variant in cases:
            params = {**base, "pattern": pattern, "variant": variant}
            case = f"{pattern}/{variant}/{fmt_bytes(ws)}"
            if variant == "triton" and triton_reason:
                ctx.progress(f"{NAME}: {case}")
                out.append(ctx.skip(NAME, case, device, params, triton_reason))
                continue
            out.append(
                measure_pattern(
                    ctx, device, buf, pattern, variant, params, case, mult >= bw.dram_min_cache_multiple
                )
            )
        del buf
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def measure_pattern(
    ctx: Context,
    device: torch.device,
    buf: torch.Tensor,
    pattern: str,
    variant: str,
    params: dict[str, Any],
    case: str,
    dram: bool,
) -> Measurement:
    arrays = ARRAYS[pattern]
    n = elements_per_array(buf.numel(), arrays, buf.element_size())
    views = [buf[i * n : (i + 1) * n] for i in range(arrays)]
    for i, v in enumerate(views):
        fill_random(v, seed=i)
    fn, check, poison_fn = _op(pattern, variant, views, ctx.cfg.bandwidth.triton_block)
    params = {**params, "elements_per_array": n, "arrays": arrays}
    return measure_case(
        ctx,
        probe=NAME,
        case=case,
        device=device,
        params=params,
        fn=fn,
        check=check,
        poison=poison_fn,
        bytes_moved=arrays * n * buf.element_size(),
        headline=str(Headline.dram(pattern, variant)) if dram else None,
    )


RANDOM_TILE = 1 << 20  # elements of random data tiled over an operand


def fill_random(v: torch.Tensor, seed: int = 0) -> None:
    """Random values in [0.5, 1.5), never zeros (zero pages and compressible data can be faster than real
    traffic): a 1 Mi-element random tile copied over `v`. A copy runs at memory speed where generating
    every value does not (uniform_ filled 1.9 GiB at ~4 GB/s on a 2-core VM, a third of the probe's time)."""
    gen = torch.Generator(device=v.device).manual_seed(seed)
    tile = torch.empty(min(RANDOM_TILE, v.numel()), dtype=v.dtype, device=v.device).uniform_(
        0.5, 1.5, generator=gen
    )
    whole = v.numel() // tile.numel() * tile.numel()
    if whole:
        v[:whole].view(-1, tile.numel()).copy_(tile.expand(whole // tile.numel(), -1))
    v[whole:].copy_(tile[: v.numel() - whole])


def _op(
    pattern: str, variant: str, v: list[torch.Tensor], block: int
) -> tuple[Callable[[], Any], Callable[[], str | None], Callable[[], None]]:
    """(timed function, checker, poisoner) for one pattern and variant over the views `v`."""
    from kernels import (
        stream as ks,
    )  # the references live beside the kernels; Triton itself is only launched on GPUs

    rtol, atol = tolerance(v[0].dtype)
    if pattern == "read":
        x = v[0]
        expected = ks.ref_read(x).item()
        if variant == "torch":
            out = torch.empty((), dtype=torch.float32, device=x.device)

            def fn() -> Any:
                return torch.sum(x, dim=0, dtype=torch.float32, out=out)

            got = out
        else:
            out = ks.partials_for(x, block)

            def fn() -> Any:
                return ks.triton_read(x, out, block)

            got = out

        def check() -> str | None:
            total = got.to(torch.float64).sum().reshape(1)
            return compare(
                total, torch.tensor([expected], dtype=torch.float64), rtol=SUM_RTOL, atol=0.0, name="sum"
            )

        return fn, check, lambda: poison(out)

    if pattern == "write":
        x = v[0]
        if variant == "torch":

            def fn() -> Any:
                return x.fill_(WRITE_VALUE)
        else:

            def fn() -> Any:
                return ks.triton_write(x, WRITE_VALUE, block)

        def check() -> str | None:
            if bool((x == WRITE_VALUE).all()):  # one pass; the chunked float64 report only for a failure
                return None
            return compare(
                x,
                lambda lo, hi: ks.ref_write(WRITE_VALUE, lo, hi, x.device),
                rtol=0.0,
                atol=0.0,
                name="write",
            )

        return fn, check, lambda: poison(x)

    if pattern == "copy":
        src, dst = v
        if variant == "torch":

            def fn() -> Any:
                return dst.copy_(src)
        else:

            def fn() -> Any:
                return ks.triton_copy(src, dst, block)

        def check() -> str | None:
            return compare(dst, src, rtol=0.0, atol=0.0, name="copy")

        return fn, check, lambda: poison(dst)

    a, b, c = v
    if variant == "torch":

        def fn() -> Any:
            return torch.add(b, c, alpha=TRIAD_SCALAR, out=a)
    else:

        def fn() -> Any:
            return ks.triton_triad(a, b, c, TRIAD_SCALAR, block)

    def check() -> str | None:
        return compare(
            a, lambda lo, hi: ks.ref_triad(b, c, TRIAD_SCALAR, lo, hi), rtol=rtol, atol=atol, name="triad"
        )

    return fn, check, lambda: poison(a)


def _skip_all(
    ctx: Context,
    device: torch.device,
    cases: list[tuple[str, str]],
    base: dict[str, Any],
    reason: str,
    status: str = "skipped",
) -> list[Measurement]:
    out = []
    for pattern, variant in cases:
        case = f"{pattern}/{variant}/{fmt_bytes(base['working_set_bytes'])}"
        ctx.progress(f"{NAME}: {case}")
        params = {**base, "pattern": pattern, "variant": variant}
        out.append(ctx.skip(NAME, case, device, params, reason, status))
    return out


if __name__ == "__main__":  # python -m probes.NAME: the whole run, this probe only
    from probes.all import probe_main

    sys.exit(probe_main(NAME))
