"""Range assignment of consumer groups (annal.client._group.range_assign): a property test against
the rules every member relies on to compute the same, disjoint, complete assignment."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from annal.client._group import range_assign
from annal.client.structs import TopicPartition


def test_range_assign_matches_kafka_ranges() -> None:
    subs = {"a": ["t"], "b": ["t"], "c": ["t"]}
    parts = {"t": list(range(7))}
    got = {m: sorted(tp.partition for tp in range_assign(m, subs, parts, ["t"])) for m in subs}
    # Kafka's RangeAssignor: 7 over 3 -> 3, 2, 2 (the first n % k members get one more).
    assert got == {"a": [0, 1, 2], "b": [3, 4], "c": [5, 6]}


def test_members_not_subscribed_get_nothing_and_partitions_follow_subscribers() -> None:
    subs = {"a": ["t", "u"], "b": ["t"]}
    parts = {"t": [0, 1], "u": [0, 1, 2]}
    assert range_assign("b", subs, parts, ["t"]) == {TopicPartition("t", 1)}
    assert range_assign("a", subs, parts, ["t", "u"]) == {TopicPartition("t", 0)} | {TopicPartition("u", p) for p in range(3)}
    assert range_assign("z", subs, parts, ["t"]) == set()


def test_sparse_partition_numbers_are_ranged_in_order() -> None:
    subs = {"a": ["t"], "b": ["t"]}
    parts = {"t": [5, 0, 3]}  # e.g. partitions 1, 2 and 4 are on dead brokers
    assert range_assign("a", subs, parts, ["t"]) == {TopicPartition("t", 0), TopicPartition("t", 3)}
    assert range_assign("b", subs, parts, ["t"]) == {TopicPartition("t", 5)}


@given(
    members=st.sets(st.text("abcdef", min_size=1, max_size=4), min_size=1, max_size=8),
    n=st.integers(0, 40),
)
def test_assignment_is_disjoint_complete_and_balanced(members: set[str], n: int) -> None:
    subs = {m: ["t"] for m in members}
    parts = {"t": list(range(n))}
    shares = [range_assign(m, subs, parts, ["t"]) for m in sorted(members)]
    union: set[TopicPartition] = set().union(*shares)
    assert union == {TopicPartition("t", p) for p in range(n)}
    assert sum(len(s) for s in shares) == n
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1
