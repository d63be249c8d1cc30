"""Sticky partitioning restricted to partitions whose leader is alive (cluster mode)."""

from __future__ import annotations

from annal.client._partitioner import StickyPartitionCache


def test_keyless_partitions_stay_on_available_ones() -> None:
    cache = StickyPartitionCache(seed=7)
    cache.set_available("t", [1, 4])
    seen = {cache.partition("t", 6)}
    prev = cache.partition("t", 6)
    for _ in range(200):
        prev = cache.next_partition("t", 6, prev)
        seen.add(prev)
    assert seen == {1, 4}


def test_current_sticky_partition_moves_off_an_unavailable_one() -> None:
    cache = StickyPartitionCache(seed=1)
    first = cache.partition("t", 3)
    cache.set_available("t", [p for p in range(3) if p != first])
    assert cache.partition("t", 3) != first
    assert not cache.is_available("t", first)
    cache.set_available("t", None)  # all alive again
    assert cache.is_available("t", first)
    seen = set()
    prev = cache.partition("t", 3)
    for _ in range(200):
        prev = cache.next_partition("t", 3, prev)
        seen.add(prev)
    assert seen == {0, 1, 2}
