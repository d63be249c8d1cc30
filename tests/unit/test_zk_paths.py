"""The ZooKeeper layout module: connect strings, znode data round trips, round-robin placement."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from annal.zookeeper import paths
from annal.cluster import BrokerInfo, TopicPlacement


def test_default_chroot_is_added_only_when_missing() -> None:
    assert paths.with_default_chroot("127.0.0.1:2181") == "127.0.0.1:2181/annal"
    assert paths.with_default_chroot("a:1,b:2/prod/annal") == "a:1,b:2/prod/annal"
    assert paths.split_hosts("a:1/x/") == ("a:1", "/x")
    with pytest.raises(ValueError):
        paths.with_default_chroot("/only-a-chroot")


def test_broker_and_topic_data_round_trip() -> None:
    info = BrokerInfo(3, "10.0.0.3", 9092, 9093)
    data = paths.encode_broker(info, start_time_ms=123)
    assert paths.decode_broker(3, data) == info
    placement = TopicPlacement("orders", {0: 1, 1: 2, 2: 3}, {"retention_ms": 1000})
    decoded = paths.decode_topic("orders", paths.encode_topic(placement))
    assert decoded.partitions == placement.partitions and decoded.config == placement.config
    assert decoded.replicas == {0: (1,), 1: (2,), 2: (3,)}
    replicated = TopicPlacement("r", {0: 2, 1: 3}, {}, replicas={0: (2, 3, 1), 1: (3, 1, 2)})
    decoded = paths.decode_topic("r", paths.encode_topic(replicated))
    assert decoded.replicas == replicated.replicas and decoded.partitions == {0: 2, 1: 3}
    # The layout before replication: one broker id per partition.
    assert paths.decode_topic("old", b'{"partitions": {"0": 4}}').replicas == {0: (4,)}
    assert paths.decode_controller(paths.encode_controller(2, timestamp_ms=1)) == 2
    assert paths.decode_controller(b"garbage") == -1
    assert paths.decode_offset(paths.encode_offset(42)) == 42
    assert paths.decode_offset(b"x") is None
    for bad in (b"", b"{}", b"[1]", b"not json"):
        with pytest.raises(ValueError):
            paths.decode_topic("t", bad)
        with pytest.raises(ValueError):
            paths.decode_broker(1, bad)


def test_group_ids_are_checked() -> None:
    assert paths.group_offset_path("g", "t", 3) == "/consumers/g/offsets/t/3"
    assert paths.group_owner_path("g", "t", 0) == "/consumers/g/owners/t/0"
    for bad in ("", "a/b", "..", "x" * 250):
        with pytest.raises(ValueError):
            paths.group_path(bad)


@given(
    ids=st.sets(st.integers(0, 50), min_size=1, max_size=8),
    partitions=st.integers(1, 60),
    start=st.integers(0, 100),
)
def test_round_robin_placement_is_balanced_and_consecutive(ids: set[int], partitions: int, start: int) -> None:
    placed = paths.place_partitions(partitions, ids, start)
    assert sorted(placed) == list(range(partitions))
    assert set(placed.values()) <= ids
    counts = [list(placed.values()).count(b) for b in ids]
    assert max(counts) - min(counts) <= 1
    order = sorted(ids)
    for p in range(partitions - 1):
        assert order.index(placed[p + 1]) == (order.index(placed[p]) + 1) % len(order)
