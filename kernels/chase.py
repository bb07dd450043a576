"""Pointer chase in Triton: the load-to-use latency of whatever level of the memory hierarchy holds a working set.

A buffer of `ws` bytes is cut into 128-byte lines (a GPU cache line; a CPU has 64, so each chased line also
keeps its neighbour cold); the first int64 of every line holds the element index of the next line in one random
order of all of them, the last pointing back to the first: a single cycle, so the chase visits every line before
it comes back. One program follows the chain `steps` times: each load's address is the previous load's value, so no two
loads overlap and the time per step is the latency of one dependent access. Below the L2's size the chase runs
in the L2, above it in DRAM: the steps between them are the hierarchy (the GPU analogue of lmbench's
lat_mem_rd). Random order defeats prefetchers; one line per 128 B defeats spatial reuse. The loads are volatile:
a uniform address would otherwise become a scalar load through AMD's scalar cache, not the vector memory path;
volatile compiles to ld.volatile.global on NVIDIA (L1 bypassed, L2 kept) and to a coherent global_load on AMD
(glc on CDNA2; sc0 sc1 on CDNA3, system scope, which may also bypass its L2: an MI300 chase can show only the
Infinity Cache and HBM steps; tests/test_kernels_aot.py shows the instructions).

    ws = 4 * L2; chain, end = make_chain(ws, steps, device); chase(chain, steps, out); out[0] == end

Checked on the CPU under TRITON_INTERPRET=1 (tests/test_chase.py); timed only on a GPU (probes/latency.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

LINE_BYTES = 128
SLOT = LINE_BYTES // 8  # int64 elements per line


@triton.jit
def chase_kernel(
    next_ptr,  # int64 buffer: element i of a line's first slot holds the next line's element index
    out_ptr,  # int64[1]: where the chase ended (keeps the loads alive, and is checked)
    start,  # the element index the chase starts from
    steps,  # dependent loads to follow
):
    idx = start.to(tl.int64)
    for _ in range(steps):
        idx = tl.load(next_ptr + idx, volatile=True)
    tl.store(out_ptr, idx)


def make_chain(ws_bytes: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(buffer, cycle): one random cycle through every 128-byte line of `ws_bytes`; cycle[i] is the i-th line
    visited from line cycle[0]."""
    lines = max(2, ws_bytes // LINE_BYTES)
    gen = torch.Generator().manual_seed(seed)
    cycle = torch.randperm(lines, generator=gen)  # a random order of the lines; line i -> the next in it
    buf = torch.zeros(lines * SLOT, dtype=torch.int64)
    buf[cycle * SLOT] = torch.roll(cycle, -1) * SLOT
    return buf.to(device), cycle


def expected_end(cycle: torch.Tensor, steps: int) -> int:
    """The element index the chase reaches after `steps` loads from line cycle[0] (the reference)."""
    return int(cycle[steps % len(cycle)]) * SLOT


def chase(buf: torch.Tensor, start: int, steps: int, out: torch.Tensor) -> None:
    chase_kernel[(1,)](buf, out, start, steps, num_warps=1)


def ref_chase(buf: torch.Tensor, start: int, steps: int) -> int:
    """The chase followed on the host, one load at a time (slow; for small checks)."""
    b, idx = buf.cpu(), start
    for _ in range(steps):
        idx = int(b[idx])
    return idx
