"""Pieces of the consumer's fetcher that need no broker."""

from __future__ import annotations

from broker.storage.record_batch import encode_batch, set_base_offset
from client._fetcher import EARLIEST, PartitionState, next_offset_after
from client.structs import TopicPartition


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
