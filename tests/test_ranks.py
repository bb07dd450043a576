"""Collectives ranks: the size plan, messages too small for one element per rank, and check data exact in bf16."""

from __future__ import annotations

import pytest
import torch

from probes import ranks
from probes.config import load_config


def test_sizes_include_the_maximum_and_tiny_messages_are_skipped(tiny):
    cc = load_config(tiny).collectives
    assert ranks.sizes(cc) == [8, 64, 512, 4096, 32768]
    assert ranks.element_counts(ranks.Case("all_gather", "fp32", 8), 4) is None  # 2 floats for 4 ranks
    assert ranks.element_counts(ranks.Case("reduce_scatter", "bf16", 64), 4) == (32, 8)


@pytest.mark.parametrize("n", [2, 8, 9, 16, 64, 256])
def test_check_data_sums_exactly_in_bf16_in_any_order_for_any_world(n):
    """A ring all-reduce rounds to bf16 after every hop: with the checker's data every partial sum must be
    exact, or a correct all-reduce on a 16-rank (two-node) world would fail its strict check."""
    from probes.ranks import exact_pattern, rank_weight

    base = exact_pattern(21, n)
    expected = base.double() * sum(rank_weight(r, n) for r in range(n))
    for order in (range(n), reversed(range(n))):  # ring hops in either direction
        acc = None
        for r in order:
            x = (base * rank_weight(r, n)).to(torch.bfloat16)
            acc = x if acc is None else (acc.float() + x.float()).to(torch.bfloat16)
        assert torch.equal(acc.double(), expected), n


def test_small_integer_data_would_round_past_eight_ranks():
    """Why the pattern changes beyond 8 ranks: the <= 8-rank data summed over 16 ranks rounds in bf16."""
    from probes.ranks import exact_pattern

    base = exact_pattern(7, 8)
    acc = None
    for r in range(16):
        x = (base * (r + 1)).to(torch.bfloat16)
        acc = x if acc is None else (acc.float() + x.float()).to(torch.bfloat16)
    assert not torch.equal(acc.double(), base.double() * 136)


def test_all_to_all_counts_and_catches_a_chunk_delivered_to_the_wrong_place():
    """nccl-tests alltoall: the whole buffer in and out, 1/n of it to every rank; busbw = algbw x (n-1)/n.
    The check data differ by source, destination and position (exact in bf16), so a swapped chunk fails."""
    from analysis.formulas import bus_bandwidth
    from probes.ranks import a2a_chunk
    from probes.verify import compare

    assert ranks.element_counts(ranks.Case("all_to_all", "bf16", 64), 4) == (32, 32)
    assert ranks.element_counts(ranks.Case("all_to_all", "fp32", 8), 4) is None  # under one element per rank
    assert bus_bandwidth("all_to_all", 100.0, 4) == 75.0
    n, chunk, rank = 4, 6, 2
    expected = torch.cat([a2a_chunk(src, rank, n, chunk) for src in range(n)]).double()
    right = expected.to(torch.bfloat16)
    assert torch.equal(right.double(), expected)  # exact in bf16
    assert compare(right, expected, rtol=0.0, atol=0.0, name="result") is None
    wrong = torch.cat([a2a_chunk(src, (rank + 1) % n, n, chunk) for src in range(n)]).to(torch.bfloat16)
    assert compare(wrong, expected, rtol=0.0, atol=0.0, name="result") is not None
    swapped = torch.cat([a2a_chunk(src, rank, n, chunk) for src in (1, 0, 2, 3)]).to(torch.bfloat16)
    assert compare(swapped, expected, rtol=0.0, atol=0.0, name="result") is not None
