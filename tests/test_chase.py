"""The pointer-chase kernel (kernels/chase.py) under the Triton interpreter: one random cycle through every line,
the chase ends where the reference says, and the check catches a broken chain."""

from __future__ import annotations

import torch

from kernels.chase import SLOT, chase, expected_end, make_chain, ref_chase


def test_the_chain_is_one_cycle_through_every_line():
    buf, cycle = make_chain(64 * 128, torch.device("cpu"), seed=3)
    seen, idx = set(), int(cycle[0]) * SLOT
    for _ in range(64):
        seen.add(idx)
        idx = int(buf[idx])
    assert len(seen) == 64 and idx == int(cycle[0]) * SLOT  # every line once, then back to the start
    assert all(int(buf[i]) == 0 for i in range(len(buf)) if i % SLOT)  # only each line's first slot is used


def test_the_kernel_ends_where_the_reference_says():
    buf, cycle = make_chain(40 * 128, torch.device("cpu"), seed=1)
    out = torch.empty(1, dtype=torch.int64)
    start = int(cycle[0]) * SLOT
    for steps in (1, 7, 40, 97):
        chase(buf, start, steps, out)
        assert int(out[0]) == expected_end(cycle, steps) == ref_chase(buf, start, steps)


def test_a_broken_chain_does_not_end_where_the_reference_says():
    buf, cycle = make_chain(40 * 128, torch.device("cpu"), seed=1)
    buf[int(cycle[5]) * SLOT] = int(cycle[9]) * SLOT  # a corrupted pointer skips three lines
    out = torch.empty(1, dtype=torch.int64)
    chase(buf, int(cycle[0]) * SLOT, 20, out)
    assert int(out[0]) != expected_end(cycle, 20)
