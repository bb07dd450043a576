"""Host <-> device copy bandwidth: the PCIe (or NVLink-C2C) link between CPU memory and each GPU.

Page-locked (pinned) host memory lets the GPU's copy engines DMA straight from it, so pinned copies approach
the link's payload rate (PCIe Gen4 x16 31.5 GB/s and Gen5 x16 63 GB/s per direction; 80-90 % of that is
normal). Pageable memory is first staged through a driver bounce buffer by the CPU, so it is slower and
depends on the host. Bidirectional runs an H2D and a D2H copy on two streams at once (two copy engines):
a full-duplex link should come close to twice the one-way figure. Bytes: one-way = size, bidir = 2 x size.
The headline per direction is the pinned figure at the largest size.

On the CPU there is no host link (the device is the host): the probe is listed as skipped with that reason.
Every copy is checked byte for byte after a poisoned destination.

    python -m probes.hostlink --device cuda
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch

from analysis.headline import Headline
from analysis.rundoc import Measurement
from analysis.units import fmt_bytes
from probes.context import Context, concurrently, measure_built
from probes.verify import compare, poison

NAME = "hostlink"
CPU_REASON = "the device is the CPU: there is no host-to-device link to measure"


def n_cases(ctx: Context) -> int:
    h = ctx.cfg.hostlink
    per_gpu = len(h.sizes_bytes) * len(h.memory) * len(h.directions)
    return sum(per_gpu if d.type == "cuda" else 1 for d in ctx.devices)


def run(ctx: Context) -> list[Measurement]:
    out: list[Measurement] = []
    for device in ctx.devices:
        if device.type != "cuda":
            ctx.progress(f"{NAME}: skipped on {device}")
            out.append(ctx.skip(NAME, "all", device, {}, CPU_REASON))
            continue
        out.extend(_run_gpu(ctx, device))
    return out


def _run_gpu(ctx: Context, device: torch.device) -> list[Measurement]:
    h = ctx.cfg.hostlink
    largest = max(h.sizes_bytes)
    out = []
    for size in h.sizes_bytes:
        for memory in h.memory:
            for direction in h.directions:
                params = {"size_bytes": size, "memory": memory, "direction": direction}
                case = f"{direction}/{memory}/{fmt_bytes(size)}"
                # pinning can fail (ulimit -l, container limits): measure_built records it
                out.append(
                    measure_built(
                        ctx,
                        probe=NAME,
                        case=case,
                        device=device,
                        params=params,
                        build=lambda size=size, memory=memory, direction=direction: _copy_case(
                            device, size, memory == "pinned", direction
                        ),
                        headline=str(Headline.host_link(direction, memory))
                        if size == largest and memory == "pinned"
                        else None,
                    )
                )
        torch.cuda.empty_cache()
    return out


def _host(size: int, pinned: bool) -> torch.Tensor:
    t = torch.empty(size, dtype=torch.uint8, pin_memory=pinned)
    # Random bytes: a verification that compares against its own poison value cannot pass by accident.
    t.random_(0, 256)
    return t


def _copy_case(
    device: torch.device, size: int, pinned: bool, direction: str
) -> tuple[Callable[[], Any], Callable[[], str | None], Callable[[], None], int]:
    """(timed function, checker, poisoner, bytes moved) for one copy case."""
    if direction == "h2d":
        src, dst = _host(size, pinned), torch.empty(size, dtype=torch.uint8, device=device)

        def fn() -> Any:
            return dst.copy_(src, non_blocking=True)

        def check() -> str | None:
            return compare(dst, src.to(device), rtol=0, atol=0, name="h2d")

        return fn, check, lambda: poison(dst), size
    if direction == "d2h":
        src = torch.randint(0, 256, (size,), dtype=torch.uint8, device=device)
        dst = torch.empty(size, dtype=torch.uint8, pin_memory=pinned)

        def fn() -> Any:
            return dst.copy_(src, non_blocking=True)

        def check() -> str | None:
            return compare(dst, src.cpu(), rtol=0, atol=0, name="d2h")

        return fn, check, lambda: poison(dst), size
    # Bidirectional: both copies on their own streams, fenced to the current stream that carries the events.
    up_src, up_dst = _host(size, pinned), torch.empty(size, dtype=torch.uint8, device=device)
    down_src = torch.randint(0, 256, (size,), dtype=torch.uint8, device=device)
    down_dst = torch.empty(size, dtype=torch.uint8, pin_memory=pinned)
    fn = concurrently(
        device,
        [
            (device, lambda: up_dst.copy_(up_src, non_blocking=True)),
            (device, lambda: down_dst.copy_(down_src, non_blocking=True)),
        ],
    )

    def check() -> str | None:
        return compare(up_dst, up_src.to(device), rtol=0, atol=0, name="bidir h2d") or compare(
            down_dst, down_src.cpu(), rtol=0, atol=0, name="bidir d2h"
        )

    def poison_both() -> None:
        poison(up_dst)
        poison(down_dst)

    return fn, check, poison_both, 2 * size


if __name__ == "__main__":  # python -m probes.NAME: the whole run, this probe only
    from probes.all import probe_main

    sys.exit(probe_main(NAME))
