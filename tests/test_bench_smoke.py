"""The soak benchmark's arithmetic (bench/soak.py), from given numbers: no stack, no timing."""
from __future__ import annotations

import pytest

from bench.soak import Block, Sample, blocks_of, shares, verdict


def test_blocks_split_in_completion_order_with_their_own_rate_and_rss() -> None:
    # 5 samples, blocks of 2: latencies 1..5 s, completions at t = 10, 11, 12, 14, 15
    samples = [Sample(latency=float(n), done=t) for n, t in zip(range(1, 6), [10, 11, 12, 14, 15], strict=True)]
    blocks = blocks_of(samples, 2, started=9.0, rss=[100.0, 110.0, 130.0])
    assert [b.count for b in blocks] == [2, 2, 1]  # the last block is what is left
    assert [(b.p50, b.p99) for b in blocks] == [(1.0, 2.0), (3.0, 4.0), (5.0, 5.0)]
    # block 1: 2 over 9 -> 11; block 2: 2 over 11 -> 14; block 3: 1 over 14 -> 15
    assert [b.rate for b in blocks] == pytest.approx([1.0, 2 / 3, 1.0])
    assert [b.rss_mb for b in blocks] == [100.0, 110.0, 130.0]


def block(index: int, p50: float, rss: float) -> Block:
    return Block(index=index, count=1000, p50=p50, p99=p50 * 3, rate=10.0, rss_mb=rss)


def test_verdict_compares_the_last_block_with_the_empty_store() -> None:
    # baseline p50 0.100 s; first block slower (warm-up), last block 0.115 s: 1.15x, within 1.2x
    result = verdict([0.09, 0.1, 0.11], [block(1, 0.2, 210.0), block(2, 0.115, 240.0)], rss_start_mb=200.0)
    assert result.last_over_empty == pytest.approx(1.15)
    assert result.last_over_first == pytest.approx(0.575)
    assert result.rss_growth_mb == pytest.approx(40.0)  # from the soak's start, not the first block
    assert result.rss_growth_blocks_mb == pytest.approx(30.0)
    assert result.flat
    assert result.line(10_000).startswith("**flat**: last block p50 / empty-store p50 = **1.15x**")


@pytest.mark.parametrize(("last_p50", "last_rss"), [(0.125, 210.0), (0.1, 250.0)])
def test_either_target_missed_is_not_flat(last_p50: float, last_rss: float) -> None:
    result = verdict([0.1], [block(1, 0.1, 200.0), block(2, last_p50, last_rss)], rss_start_mb=200.0)
    assert not result.flat
    assert result.line(10_000).startswith("**NOT flat**")


def test_messages_are_shared_over_the_pairs_without_losing_any() -> None:
    assert shares(10_000, 20) == [500] * 20
    assert shares(7, 3) == [3, 2, 2]
