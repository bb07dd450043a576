"""Collective bus bandwidth (all-reduce, all-gather, reduce-scatter) and the GPU peer-to-peer link matrix.

Tensor-parallel decode runs two all-reduces per layer, so how fast GPUs exchange data sets the TP cost.
The probe runs the real engines through torch.distributed, NCCL on GPUs and gloo on CPUs, one process per
device, with nccl-tests' definitions: the message size S is the whole buffer (all-gather: the output,
reduce-scatter: the input); algbw = S / t; busbw = algbw * 2(n-1)/n for all-reduce and (n-1)/n for
all-gather and reduce-scatter, which makes busbw comparable with a link's wire rate whatever n is. t is the
slowest rank's median (the collective is done when its last rank is). All-reduces run in place.

Every size is checked after a fresh start (rank r contributes (r+1) * base, so the result is known) on
every rank; a wrong value is an error (nccl-tests' #wrong). A rank that dies or hangs does not hang the
run: every collective has a timeout, the parent tears all processes down and records the failure, and the
rest of probes.all goes on. The full time-vs-size curve is kept for planners (analysis.collectives
interpolates it in log space); with 2+ GPUs a P2P copy matrix and the NVML topology say which link each
figure went over.

The probe is four modules: this entry point, `probes.ranks` (what each rank measures), `probes.launch`
(spawn, watch, tear down) and `probes.p2p` (the GPU pair matrix); `probes.torchrun` is the rank under torchrun.

    python -m probes.collectives --device cpu --world-size 2            # gloo between local processes
    python -m probes.collectives --device cuda                          # NCCL over every local GPU
    torchrun --standalone --nproc-per-node 2 -m probes.torchrun --device cpu
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-endpoint HOST:29500 -m probes.torchrun   # multi-node
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from analysis.rundoc import Measurement
from probes.config import RunConfig
from probes.context import Context
from probes.launch import launch_ranks, resolve_launch
from probes.p2p import link_label, ordered_pairs, p2p_matrix
from probes.ranks import NAME, plan

NOTE = (
    "collectives: nccl-tests semantics: S = the whole buffer (all-gather: output, reduce-scatter: input); "
    "algbw = S / t, busbw = algbw * 2(n-1)/n (all-reduce) or (n-1)/n (all-gather, reduce-scatter); "
    "t = the slowest rank's median"
)


def preflight(devices: list[torch.device], cfg: RunConfig, options: dict[str, Any]) -> None:
    """Bad --world-size, --backend or --port: a ConfigError before anything runs."""
    resolve_launch(devices, cfg, options)


def n_cases(ctx: Context) -> int:
    gpus = sum(1 for d in ctx.devices if d.type == "cuda")
    # P2P: every ordered pair one way, every unordered pair both ways
    pairs = ordered_pairs(gpus, ctx.cfg.collectives.p2p_pairs) if gpus >= 2 else []
    return len(plan(ctx.cfg.collectives)) + len(pairs) * 3 // 2


# ---- the parent: spawn, watch, tear down ----------------------------------------------------------------


def run(ctx: Context) -> list[Measurement]:
    out: list[Measurement] = []
    gpus = [d for d in ctx.devices if d.type == "cuda"]
    if len(gpus) >= 2:
        out.extend(p2p_matrix(ctx, gpus))
    launch = resolve_launch(ctx.devices, ctx.cfg, ctx.options)
    if launch.world_size < 2:
        device = ctx.devices[0]
        why = "1 device: no collective to measure (the host-link probe stands for the interconnect)"
        if launch.device_kind == "cpu":
            why = "1 process (--world-size 1): no collective to measure"
        for case in plan(ctx.cfg.collectives):
            ctx.progress(f"{NAME}: {case.name}")
            out.append(
                ctx.skip(
                    NAME,
                    case.name,
                    device,
                    {"op": case.op, "dtype": case.dtype, "size_bytes": case.size},
                    why,
                )
            )
        return out
    link = link_label(ctx, gpus[: launch.world_size]) if gpus else "loopback on one host (gloo over TCP)"
    out.extend(launch_ranks(ctx, launch, link=link))
    return out


if __name__ == "__main__":
    from probes.torchrun import main

    sys.exit(main(sys.argv[1:]))
