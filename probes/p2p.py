"""GPU peer-to-peer copies and the link between each pair of GPUs, from NVML.

For each ordered pair of local GPUs: a one-way copy and (once per unordered pair) both directions at once,
each GPU pushing its own copy as two peers exchanging data do, with the link the bytes went over (NVLink
generation and active links, or the PCIe path from NVML's topology), so a collective figure can be read
against the link that carried it.
"""

from __future__ import annotations

from typing import Any

import torch

from analysis.rundoc import Measurement
from probes.context import Context, concurrently, measure_built
from probes.nvml import nvlink_version
from probes.ranks import NAME
from probes.verify import compare, poison

_TOPOLOGY = {
    0: "same board",
    10: "PCIe switch",
    20: "PCIe switches",
    30: "PCIe host bridge",
    40: "NUMA node interconnect",
    50: "CPU socket interconnect (SMP)",
}


def pair_link(ctx: Context, a: torch.device, b: torch.device) -> str:
    """Which link joins two GPUs: from NVML, NVLink (with generation and active links) or the PCIe path; from
    amdsmi on AMD, xGMI or PCIe and the hops between them."""
    nv = ctx.nvml
    ha, hb = nv.handle(a), nv.handle(b)
    if (ha is None or hb is None) and torch.version.hip:  # AMD: xGMI or PCIe, and the hops, from amdsmi
        from probes import amd

        smi = amd.session()
        label = amd.pair_link(smi, smi.handle(a), smi.handle(b))
        return label or f"unknown ({smi.reason or 'amdsmi cannot say'})"
    if ha is None or hb is None:
        return "unknown (NVML not available)"
    status = nv.call("nvmlDeviceGetP2PStatus", ha, hb, nv.const("NVML_P2P_CAPS_INDEX_NVLINK", 2))
    if status == nv.const("NVML_P2P_STATUS_OK", 0):
        active = [
            lk
            for lk in range(nv.const("NVML_NVLINK_MAX_LINKS", 18))
            if nv.call("nvmlDeviceGetNvLinkState", ha, lk) == 1
        ]
        version = nvlink_version(nv.call("nvmlDeviceGetNvLinkVersion", ha, active[0])) if active else None
        gen = version[1] if version else "?"
        return f"NVLink {gen} ({len(active)} active links on {a})"
    level = nv.call("nvmlDeviceGetTopologyCommonAncestor", ha, hb)
    return (
        f"PCIe via {_TOPOLOGY.get(level, 'unknown path')}"
        if isinstance(level, int)
        else "PCIe (path unknown)"
    )


def link_label(ctx: Context, gpus: list[torch.device]) -> str:
    if len(gpus) < 2:
        return "" if not gpus else "single GPU"
    labels = {pair_link(ctx, a, b).split(" (")[0] for i, a in enumerate(gpus) for b in gpus[i + 1 :]}
    return " / ".join(sorted(labels))


def ordered_pairs(n: int, mode: str) -> list[tuple[int, int]]:
    """The (source, destination) GPU indices the P2P matrix measures: every ordered pair (`all`), or each GPU
    with its ring neighbours (`ring`: every GPU's links exercised in 3n cases, not 3n(n-1)/2)."""
    if mode == "ring":
        unordered = sorted({tuple(sorted((i, (i + 1) % n))) for i in range(n) if n >= 2})
        return sorted({p for a, b in unordered for p in ((a, b), (b, a))})
    return [(a, b) for a in range(n) for b in range(n) if a != b]


def p2p_matrix(ctx: Context, gpus: list[torch.device]) -> list[Measurement]:
    """GB/s for each ordered GPU pair, one way and both ways at once, with the link it went over."""
    nbytes = ctx.cfg.collectives.p2p_bytes
    out = []
    for ia, ib in ordered_pairs(len(gpus), ctx.cfg.collectives.p2p_pairs):
        a, b = gpus[ia], gpus[ib]
        link = pair_link(ctx, a, b)
        for direction in ("uni", "bidir"):
            if direction == "bidir" and ia > ib:
                continue  # a bidirectional pair is measured once
            case = f"p2p/{a.index}->{b.index}/{direction}"
            params = {
                "src": str(a),
                "dst": str(b),
                "direction": direction,
                "size_bytes": nbytes,
                "link": link,
            }
            build = lambda a=a, b=b, direction=direction: _p2p_case(a, b, nbytes, direction)  # noqa: E731
            out.append(measure_built(ctx, probe=NAME, case=case, device=a, params=params, build=build))
    return out


def _p2p_case(a: torch.device, b: torch.device, nbytes: int, direction: str) -> tuple[Any, Any, Any, int]:
    src_a = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device=a)
    dst_b = torch.empty(nbytes, dtype=torch.uint8, device=b)
    if direction == "uni":
        return (
            lambda: dst_b.copy_(src_a, non_blocking=True),
            lambda: compare(dst_b, src_a.to(b), rtol=0, atol=0, name=f"{a}->{b}"),
            lambda: poison(dst_b),
            nbytes,
        )
    src_b = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device=b)
    dst_a = torch.empty(nbytes, dtype=torch.uint8, device=a)
    # each GPU pushes its own copy, as two peers exchanging data do
    both = concurrently(
        a,
        [
            (a, lambda: dst_b.copy_(src_a, non_blocking=True)),
            (b, lambda: dst_a.copy_(src_b, non_blocking=True)),
        ],
    )

    def check() -> str | None:
        return compare(dst_b, src_a.to(b), rtol=0, atol=0, name=f"{a}->{b}") or compare(
            dst_a, src_b.to(a), rtol=0, atol=0, name=f"{b}->{a}"
        )

    def reset() -> None:
        poison(dst_b)
        poison(dst_a)

    return both, check, reset, 2 * nbytes
