"""The soak benchmark's arithmetic (bench/soak.py), from given numbers: no stack, no timing."""
from __future__ import annotations

import pytest

from bench.soak import Block, BlockRun, Sample, blocks_of, shares, verdict


def test_each_block_has_its_own_rate_probe_and_rss() -> None:
    # block 1: latencies 1, 2 s, sent from t=9, done at 10, 11; block 2: 3, 4, 5 s from t=20 (after
    # a probe) to 24: the probe's time between the blocks counts in neither rate
    runs = [
        BlockRun(samples=[Sample(1.0, 10.0), Sample(2.0, 11.0)], started=9.0, rss_mb=100.0, probe=[0.02, 0.03, 0.5]),
        BlockRun(samples=[Sample(3.0, 21.0), Sample(5.0, 24.0), Sample(4.0, 22.0)], started=20.0, rss_mb=110.0,
                 probe=[0.04]),
    ]
    blocks = blocks_of(runs)
    assert [b.count for b in blocks] == [2, 3]
    assert [(b.p50, b.p99) for b in blocks] == [(1.0, 2.0), (4.0, 5.0)]
    assert [b.rate for b in blocks] == pytest.approx([1.0, 0.75])
    assert [(b.probe_p50, b.probe_p99) for b in blocks] == [(0.03, 0.5), (0.04, 0.04)]
    assert [b.rss_mb for b in blocks] == [100.0, 110.0]


def block(index: int, probe_p50: float, rss: float) -> Block:
    return Block(index=index, count=1000, p50=0.8, p99=2.0, rate=10.0, rss_mb=rss, probe_p50=probe_p50,
                 probe_p99=probe_p50 * 3)


def test_verdict_compares_the_probe_after_the_last_block_with_the_empty_store() -> None:
    # empty-store probe p50 0.100 s; after the first block slower, after the last 0.115 s: 1.15x
    result = verdict([0.09, 0.1, 0.11], [block(1, 0.2, 210.0), block(2, 0.115, 240.0)], rss_start_mb=200.0)
    assert result.last_over_empty == pytest.approx(1.15)
    assert result.last_over_first == pytest.approx(0.575)
    assert result.rss_growth_mb == pytest.approx(40.0)  # from the soak's start, not the first block
    assert result.rss_growth_blocks_mb == pytest.approx(30.0)
    assert result.flat
    assert result.line(10_000).startswith("**flat**: probe p50 after the last block / with the store empty = **1.15x**")


@pytest.mark.parametrize(("last_p50", "last_rss"), [(0.125, 210.0), (0.1, 250.0)])
def test_either_target_missed_is_not_flat(last_p50: float, last_rss: float) -> None:
    result = verdict([0.1], [block(1, 0.1, 200.0), block(2, last_p50, last_rss)], rss_start_mb=200.0)
    assert not result.flat
    assert result.line(10_000).startswith("**NOT flat**")


def test_messages_are_shared_over_the_pairs_without_losing_any() -> None:
    assert shares(10_000, 20) == [500] * 20
    assert shares(7, 3) == [3, 2, 2]
