"""The producer's partitioner: murmur3 of the key, and the sticky cache for keyless records."""

from __future__ import annotations

import collections

import mmh3
from hypothesis import given
from hypothesis import strategies as st

from annal.client._partitioner import StickyPartitionCache, partition_for_key


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=1000))
def test_same_key_same_partition_and_in_range(key, n):
    p = partition_for_key(key, n)
    assert 0 <= p < n
    assert partition_for_key(bytes(key), n) == p


def test_matches_documented_formula():
    for key in (b"", b"a", b"user-42", bytes(range(200))):
        assert partition_for_key(key, 7) == (mmh3.hash(key, 0, False) & 0x7FFFFFFF) % 7


def test_keys_spread_over_partitions():
    counts = collections.Counter(partition_for_key(b"key-%d" % i, 8) for i in range(8000))
    assert set(counts) == set(range(8))
    assert min(counts.values()) > 800  # roughly uniform (1000 expected each)


def test_sticky_partition_is_stable_until_moved():
    cache = StickyPartitionCache(seed=1)
    p = cache.partition("t", 5)
    assert all(cache.partition("t", 5) == p for _ in range(100))
    q = cache.next_partition("t", 5, p)
    assert q != p and 0 <= q < 5
    assert cache.partition("t", 5) == q
    # A second close of the old batch does not move the topic again.
    assert cache.next_partition("t", 5, p) == q


def test_sticky_moves_visit_every_partition():
    cache = StickyPartitionCache(seed=2)
    p = cache.partition("t", 4)
    seen = {p}
    for _ in range(200):
        p = cache.next_partition("t", 4, p)
        seen.add(p)
    assert seen == {0, 1, 2, 3}


def test_single_partition_and_shrunk_counts():
    cache = StickyPartitionCache(seed=3)
    assert cache.partition("t", 1) == 0
    assert cache.next_partition("t", 1, 0) == 0
    cache.partition("u", 100)
    assert cache.partition("u", 2) in (0, 1)  # the count went down: re-chosen in range


def test_keyless_records_avoid_partitions_without_a_live_leader():
    cache = StickyPartitionCache(seed=4)
    cache.set_available("t", [1, 3])
    p = cache.partition("t", 4)
    seen = {p}
    for _ in range(100):
        p = cache.next_partition("t", 4, p)
        seen.add(p)
    assert seen == {1, 3}
    cache.set_available("t", [0])  # the current sticky partition went down: re-chosen
    assert cache.partition("t", 4) == 0
    cache.set_available("t", None)
    seen = set()
    for _ in range(200):
        p = cache.next_partition("t", 4, p)
        seen.add(p)
    assert seen == {0, 1, 2, 3}
