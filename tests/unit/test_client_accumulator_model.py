"""Property test of the accumulator against a simple model: whatever mix of appends, drains,
retriable failures (re-queued) and successes happens, each partition's records are acknowledged
in the order they were sent, each exactly once, with consecutive offsets."""

from __future__ import annotations

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from annal.record import CODEC_NONE, decode_batch
from annal.client._accumulator import RecordAccumulator
from annal.client._partitioner import StickyPartitionCache
from annal.client.structs import TopicPartition

pytestmark = pytest.mark.usefixtures("codec_impl")  # pure-Python and compiled codec

ops = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 2), st.integers(1, 300)),
        st.tuples(st.just("drain"), st.integers(0, 2), st.integers(200, 5000)),
        st.tuples(st.just("fail"), st.integers(0, 2), st.just(0)),
        st.tuples(st.just("ack"), st.integers(0, 2), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_per_partition_order_and_exactly_once(script):
    acc = RecordAccumulator(512, CODEC_NONE, 0, 1 << 24, 10**9, 0, StickyPartitionCache(seed=0))
    sent: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
    in_flight: dict[int, list] = {}
    log_end = {0: 0, 1: 0, 2: 0}
    stored: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
    futures = []
    seq = 0

    def ack(p: int) -> None:
        for b in in_flight.pop(p):
            _h, recs = decode_batch(b"".join(b.close()))
            stored[p] += [r.value for r in recs]
            acc.complete(b, log_end[p], None)
            log_end[p] += len(recs)

    for op, p, n in script:
        tp = TopicPartition("t", p)
        if op == "send":
            value = b"%06d" % seq + b"x" * (n % 50)
            seq += 1
            sent[p].append(value)
            futures.append((p, value, acc.append("t", p, 3, 1, None, value, None, 1000)))
        elif op == "drain" and p not in in_flight:  # one request per partition in flight
            got = acc.drain([tp], n).get(tp)
            if got:
                in_flight[p] = got
        elif op == "fail" and p in in_flight:
            acc.reenqueue(in_flight.pop(p), backoff_ms=0)
        elif op == "ack" and p in in_flight:
            ack(p)
    # Finish: send everything still queued, in order.
    for p in (0, 1, 2):
        if p in in_flight:
            ack(p)
        while True:
            got = acc.drain([TopicPartition("t", p)], 1 << 30).get(TopicPartition("t", p))
            if not got:
                break
            in_flight[p] = got
            ack(p)
    assert stored == sent
    for p, value, fut in futures:
        md = fut.get(0)
        assert md.partition == p and stored[p][md.offset] == value
    assert acc.incomplete_batches() == []
