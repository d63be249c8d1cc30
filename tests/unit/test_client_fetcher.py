"""Pieces of the consumer's fetcher that need no broker."""

from __future__ import annotations

import pytest

from annal.record import encode_batch, set_base_offset
from annal.client._fetcher import EARLIEST, PartitionState, next_offset_after
from annal.client.structs import TopicPartition

pytestmark = pytest.mark.usefixtures("codec_impl")  # pure-Python and compiled codec


def batch(base: int, n: int) -> bytes:
    buf = bytearray(encode_batch([(1, None, b"v", None)] * n))
    set_base_offset(buf, base)
    return bytes(buf)


def test_next_offset_after_whole_batches_only():
    data = batch(10, 3) + batch(13, 5)
    assert next_offset_after(data, 10) == 18
    assert next_offset_after(data + batch(18, 2)[:30], 10) == 18  # a partial batch is ignored
    assert next_offset_after(b"", 7) == 7
    assert next_offset_after(memoryview(data)[: len(batch(10, 3))], 10) == 13


def test_seek_drops_buffered_data_and_bumps_the_epoch():
    st = PartitionState(TopicPartition("t", 0))
    st.reset_to = EARLIEST
    assert not st.fetchable
    st.seek(5)
    assert st.fetchable and st.position == 5 and st.fetch_offset == 5 and st.epoch == 1
    st.buffered.append(object())  # type: ignore[arg-type]
    st.leftover.append(object())
    st.seek(2)
    assert not st.buffered and not st.leftover and st.epoch == 2
    st.paused = True
    assert not st.fetchable


class _DrainSpy:
    """Stands in for a wake-up socket; calls ``during`` in the middle of the drain, as an
    application thread calling wakeup() at that moment would."""

    def __init__(self, real, during):
        self.real, self.during, self.calls = real, during, 0

    def fileno(self):
        return self.real.fileno()

    def recv(self, n):
        self.calls += 1
        data = self.real.recv(n)
        if self.calls == 1:
            self.during()
        return data


def _wakeup_invariant_holds(owner) -> bool:
    """After a poll, either the flag is clear (the next wakeup() writes a byte) or a byte is
    waiting: a wakeup can never be swallowed."""
    import select

    pending = select.select([owner._waker._r.real], [], [], 0)[0]
    return not owner._waker._woken or bool(pending)


def test_fetcher_wakeup_during_drain_is_not_lost():
    from annal.client._fetcher import Fetcher

    f = Fetcher(None, None, auto_offset_reset="earliest", fetch_min_bytes=1, fetch_max_wait_ms=500,  # type: ignore[arg-type]
                fetch_max_bytes=1 << 20, max_partition_fetch_bytes=1 << 20, retry_backoff_ms=10,
                request_timeout_ms=1000)
    f._waker._r = _DrainSpy(f._waker._r, f.wakeup)  # type: ignore[assignment]
    f.wakeup()
    f._poll(0)
    assert _wakeup_invariant_holds(f)


def test_sender_wakeup_during_drain_is_not_lost():
    from annal.record import CODEC_NONE
    from annal.client._accumulator import RecordAccumulator
    from annal.client._sender import Sender

    acc = RecordAccumulator(1024, CODEC_NONE, 5, 1 << 20, 1000, 10)
    s = Sender(acc, None, 1, 0, 10, 1000, 5, 1 << 20)  # type: ignore[arg-type]
    s._waker._r = _DrainSpy(s._waker._r, s.wakeup)  # type: ignore[assignment]
    s.wakeup()
    s._poll(0.0, 0.0)
    assert _wakeup_invariant_holds(s)


def test_list_offsets_asks_for_metadata_even_right_after_another_refresh():
    """position() right after assign(): the fetch thread may have just refreshed the topic
    (rate limit window) without the answer being applied yet; list_offsets must still ask."""
    import time

    from annal.protocol import annal_pb2
    from annal.client._fetcher import LATEST, Fetcher
    from annal.client._metadata import ClusterMetadata, MetadataSnapshot
    from annal.client.structs import BrokerMetadata, PartitionMetadata, TopicDescription

    snap = MetadataSnapshot(
        {0: BrokerMetadata(0, "127.0.0.1", 1, 2)},
        {"t": TopicDescription("t", (PartitionMetadata("t", 0, 0, 0, 7, 0),))},
    )

    class Source:
        calls = 0

        def fetch(self, topics):
            Source.calls += 1
            return snap

        def close(self):
            pass

    class Rpc:
        def call(self, address, method, request, timeout_ms=None):
            assert (address, method) == ("127.0.0.1:1", "ListOffsets")
            p = request.partitions[0]
            return annal_pb2.ListOffsetsResponse(
                results=[annal_pb2.ListOffsetsResult(topic=p.topic, partition=p.partition, offset=7, timestamp=-1)]
            )

    md = ClusterMetadata(Source(), retry_backoff_ms=60_000)
    md._last_refresh["t"] = time.monotonic()  # "another thread refreshed 't' just now"
    f = Fetcher(md, Rpc(), auto_offset_reset="earliest", fetch_min_bytes=1,  # type: ignore[arg-type]
                fetch_max_wait_ms=500, fetch_max_bytes=1 << 20, max_partition_fetch_bytes=1 << 20,
                retry_backoff_ms=10, request_timeout_ms=1000)
    assert f.list_offsets({TopicPartition("t", 0): LATEST}) == {TopicPartition("t", 0): (7, -1)}
    assert Source.calls == 1


def test_no_leader_warning_while_the_topics_metadata_is_still_on_its_way(caplog):
    """Right after assign(), before the first metadata answer, a partition has no known
    leader: that is not a leaderless partition and must not be reported as one. Once the
    metadata says its leader is not alive, it is."""
    import logging

    from annal.client._fetcher import Fetcher
    from annal.client._metadata import ClusterMetadata, MetadataSnapshot
    from annal.client.structs import BrokerMetadata, PartitionMetadata, TopicDescription

    class Source:
        def __init__(self):
            self.snap = MetadataSnapshot({0: BrokerMetadata(0, "127.0.0.1", 1, 2)}, {})

        def fetch(self, topics):
            return self.snap

        def close(self):
            pass

    src = Source()
    md = ClusterMetadata(src, retry_backoff_ms=0)
    f = Fetcher(md, None, auto_offset_reset="earliest", fetch_min_bytes=1,  # type: ignore[arg-type]
                fetch_max_wait_ms=500, fetch_max_bytes=1 << 20, max_partition_fetch_bytes=1 << 20,
                retry_backoff_ms=10, request_timeout_ms=1000)
    tp = TopicPartition("t", 0)
    f.states[tp] = PartitionState(tp)
    f.states[tp].seek(0)
    with caplog.at_level(logging.WARNING, logger="annal.client"):
        f._run_once()  # the topic is not in the metadata yet (its answer is still on its way)
        assert not [r for r in caplog.records if "no live leader" in r.getMessage()]
        src.snap = MetadataSnapshot({0: BrokerMetadata(0, "127.0.0.1", 1, 2)},
                                    {"t": TopicDescription("t", (PartitionMetadata("t", 0, 5, 0, 0, 0),))})
        f._run_once()  # asks again: the answer names broker 5 as the leader
        assert md.leader_for("t", 0) == 5
        f._run_once()  # which is not alive
        assert [r for r in caplog.records if "no live leader for t-0 (leader 5)" in r.getMessage()]
    f._waker.close()
