"""Latency: where bad topology shows first. Load-to-use latency by pointer chase, and the latency of a tiny copy
from the host and between GPUs.

- Pointer chase (kernels/chase.py): one random cycle through every 128-byte line of a working set, followed by
  one program; the time per dependent load at working sets inside the L2 (`latency_l2_chase`) and at several
  times it (`latency_dram_chase`, HBM or GDDR), over `[latency] working_set_cache_multiples`. Checked: the
  chase ends on the line the reference says.
- A `copy_bytes` pinned host-to-device copy (`latency_h2d_pinned`): what every small transfer pays (a PCIe
  round trip, the driver's submission), the nvbandwidth latency test's counterpart.
- A `copy_bytes` copy between every ordered GPU pair (`latency_p2p_copy`, the median of the pairs; each pair
  beside it): a peer link (NVLink, xGMI) answers in a few microseconds, a path through the host in tens.
On a CPU there is no device memory hierarchy for the Triton chase to time (the interpreter is for
correctness) and no link: every case is listed as skipped with the reason.

    python -m probes.latency            # on every GPU of the node
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from analysis.headline import Headline
from analysis.rundoc import Measurement
from analysis.units import fmt_bytes
from probes.context import Context, measure_case
from probes.device import cache_bytes, triton_unavailable_reason

NAME = "latency"
NOTE = (
    "latency: seconds per dependent load of a pointer chase over 128-byte lines (random single cycle); a tiny "
    "pinned host-to-device copy and a tiny GPU-to-GPU copy, each submitted, completed and waited for"
)
CPU_REASON = "the CPU: no device memory hierarchy for the Triton chase to time and no host or peer link"


def _pairs(ctx: Context, gpus: list[torch.device]) -> list[tuple[torch.device, torch.device]]:
    from probes.p2p import ordered_pairs

    mode = ctx.cfg.latency.p2p_pairs
    return [] if mode == "none" else [(gpus[i], gpus[j]) for i, j in ordered_pairs(len(gpus), mode)]


def n_cases(ctx: Context) -> int:
    lc = ctx.cfg.latency
    gpus = [d for d in ctx.devices if d.type == "cuda"]
    if not gpus:
        return len(ctx.devices)
    per = 1 if lc.devices == "first" else len(gpus)
    return per * (len(lc.working_set_cache_multiples) + 1) + len(_pairs(ctx, gpus))


def run(ctx: Context) -> list[Measurement]:
    out: list[Measurement] = []
    gpus = [d for d in ctx.devices if d.type == "cuda"]
    if not gpus:
        return [ctx.skip(NAME, "all", d, {}, CPU_REASON) for d in ctx.devices]
    for device in gpus[:1] if ctx.cfg.latency.devices == "first" else gpus:
        out.extend(chase_cases(ctx, device))
        out.append(h2d_case(ctx, device))
    out.extend(p2p_cases(ctx, _pairs(ctx, gpus)))
    return out


def chase_cases(ctx: Context, device: torch.device) -> list[Measurement]:
    from kernels.chase import SLOT, chase, expected_end, make_chain

    lc = ctx.cfg.latency
    l2 = cache_bytes(device)
    why = triton_unavailable_reason(device)
    out = []
    below = [m for m in lc.working_set_cache_multiples if m < 1.0]
    above = [m for m in lc.working_set_cache_multiples if m >= 4.0]
    for mult in lc.working_set_cache_multiples:
        ws = max(4096, int(mult * l2) // 128 * 128)
        case = f"chase/{fmt_bytes(ws)}"
        params: dict[str, Any] = {"kind": "chase", "working_set_bytes": ws, "cache_multiple": mult}
        params["steps"] = lc.chase_steps
        if why:
            out.append(ctx.skip(NAME, case, device, params, why))
            continue
        buf, cycle = make_chain(ws, device)
        result = torch.zeros(1, dtype=torch.int64, device=device)
        start, end = int(cycle[0]) * SLOT, expected_end(cycle, lc.chase_steps)
        level = "l2" if below and mult == max(below) else "dram" if above and mult == min(above) else None
        m = measure_case(
            ctx,
            probe=NAME,
            case=case,
            device=device,
            params=params,
            fn=lambda buf=buf, result=result, start=start: chase(buf, start, lc.chase_steps, result),
            check=lambda result=result, end=end: (
                None if int(result[0]) == end else f"the chase ended at element {int(result[0])}, not {end}"
            ),
            poison=lambda result=result: result.fill_(-1),
            headline=str(Headline.latency(level, "chase")) if level else None,
        )
        per_load(m, lc.chase_steps)
        out.append(m)
        del buf
    return out


def per_load(m: Measurement, steps: int) -> None:
    """A chase case's figure: seconds per dependent load (its timing stays that of the whole chase)."""
    if m.status == "ok" and m.value is not None:
        m.value, m.unit = m.value / steps, "seconds"
        m.params["seconds_per_load"] = m.value


def h2d_case(ctx: Context, device: torch.device) -> Measurement:
    n = max(1, ctx.cfg.latency.copy_bytes // 4)
    host = torch.arange(n, dtype=torch.int32).pin_memory()
    dev = torch.empty(n, dtype=torch.int32, device=device)
    return measure_case(
        ctx,
        probe=NAME,
        case=f"h2d/{n * 4} B",
        device=device,
        params={"kind": "h2d", "bytes": n * 4, "memory": "pinned"},
        fn=lambda: waited(dev.copy_(host, non_blocking=True), device),
        check=lambda: None if torch.equal(dev.cpu(), host) else "the copy did not arrive",
        poison=lambda: dev.fill_(-1),
        headline=str(Headline.latency("h2d", "pinned")),
    )


def waited(_: Any, device: torch.device) -> None:
    """Wait for the copy just submitted: each timed copy is submitted, completed and waited for, so back-to-back
    repetitions cannot overlap and hide the latency (what an application waiting on a tiny transfer pays)."""
    torch.cuda.synchronize(device)


def p2p_cases(ctx: Context, pairs: list[tuple[torch.device, torch.device]]) -> list[Measurement]:
    from probes.p2p import pair_link

    n = max(1, ctx.cfg.latency.copy_bytes // 4)
    out = []
    for a, b in pairs:
        src = torch.arange(n, dtype=torch.int32, device=a)
        dst = torch.empty(n, dtype=torch.int32, device=b)
        link = pair_link(ctx, a, b)
        out.append(
            measure_case(
                ctx,
                probe=NAME,
                case=f"p2p/{a.index}->{b.index}",
                device=a,
                params={"kind": "p2p", "bytes": n * 4, "src": str(a), "dst": str(b), "link": link},
                fn=lambda src=src, dst=dst, b=b: waited(dst.copy_(src, non_blocking=True), b),
                check=lambda src=src, dst=dst: (
                    None if torch.equal(dst.cpu(), src.cpu()) else "the copy did not arrive"
                ),
                poison=lambda dst=dst: dst.fill_(-1),
                headline=str(Headline.latency("p2p", "copy")),
            )
        )
    return out


if __name__ == "__main__":  # python -m probes.NAME: the whole run, this probe only
    from probes.all import probe_main

    sys.exit(probe_main(NAME))
