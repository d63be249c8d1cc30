"""The record accumulator alone (no network): batching, sticky moves, drain order, retries,
memory limits, expiry and the futures."""

from __future__ import annotations

import threading

import pytest

from annal.errors import BufferExhaustedError, KafkaTimeoutError, NotLeaderForPartitionError
from annal.record import CODEC_LZ4, CODEC_NONE, decode_batch

from annal.client._accumulator import RecordAccumulator
from annal.client._partitioner import StickyPartitionCache
from annal.client.structs import RecordMetadata, TopicPartition

pytestmark = pytest.mark.usefixtures("codec_impl")  # pure-Python and compiled codec

TP0 = TopicPartition("t", 0)


def make(**kw) -> RecordAccumulator:
    args = dict(
        batch_size=1024, compression=CODEC_NONE, linger_ms=5, buffer_memory=1 << 20,
        delivery_timeout_ms=120000, retry_backoff_ms=100, partitioner=StickyPartitionCache(seed=0),
    )
    args.update(kw)
    acc = RecordAccumulator(**args)
    acc.set_partition_count("t", 3)
    return acc


def test_records_fill_batches_in_order_and_build_valid_bytes():
    acc = make()
    futs = [acc.append("t", 0, 3, 1000 + i, None, b"v%03d" % i, None, 1000) for i in range(100)]
    batches = list(acc.batches[TP0])
    assert len(batches) > 1 and all(b.closed for b in batches[:-1]) and not batches[-1].closed
    assert [f[1] for f in futs[:3]] == [0, 1, 2]  # offset deltas
    drained = acc.drain([TP0], 1 << 30)[TP0]
    assert drained == batches and not acc.batches[TP0]
    values = []
    for b in drained:
        header, recs = decode_batch(b"".join(b.close()))
        values += [r.value for r in recs]
        assert header.records_count == b.records_count
    assert values == [b"v%03d" % i for i in range(100)]


def test_keyless_records_move_to_another_partition_when_the_batch_fills():
    acc = make()
    parts = [acc.append("t", None, 3, 1, None, b"x" * 100, None, 1000)[0].tp.partition for _ in range(60)]
    runs = [parts[0]]
    for p in parts[1:]:
        if p != runs[-1]:
            runs.append(p)
    assert len(runs) >= 5  # moved on each time a 1 KiB batch filled
    assert all(a != b for a, b in zip(runs, runs[1:]))


def test_ready_respects_linger_mute_and_flush():
    acc = make(linger_ms=1000)
    acc.append("t", 0, 3, 1, None, b"v", None, 1000)
    now = acc.batches[TP0][0].created_ms
    assert acc.ready(now, set())[0] == []
    assert acc.ready(now + 1001, set())[0] == [TP0]
    assert acc.ready(now + 1001, {TP0})[0] == []  # muted: a request is in flight
    acc.begin_flush()
    assert acc.ready(now, set())[0] == [TP0]
    acc.end_flush()


def test_reenqueue_puts_batches_back_in_front_in_order():
    acc = make()
    for i in range(40):
        acc.append("t", 0, 3, 1, None, b"%02d" % i + b"x" * 90, None, 1000)
    first = acc.drain([TP0], 2500)[TP0]
    rest = list(acc.batches[TP0])
    acc.reenqueue(first, backoff_ms=0)
    assert list(acc.batches[TP0]) == first + rest


def test_futures_callbacks_and_errors():
    acc = make()
    f1 = acc.append("t", 0, 3, 77, b"k", b"a", None, 1000)
    f2 = acc.append("t", 0, 3, 78, None, b"b", [("h", None)], 1000)
    got, errs = [], []
    f1.add_callback(got.append)
    f2.add_errback(errs.append)
    assert not f1.is_done()
    with pytest.raises(KafkaTimeoutError):
        f1.get(timeout=0.01)
    (batch,) = acc.drain([TP0], 1 << 20)[TP0]
    acc.complete(batch, 500, None)
    assert f1.get() == RecordMetadata("t", 0, 500, 77)
    assert f2.get() == RecordMetadata("t", 0, 501, 78)
    assert got == [RecordMetadata("t", 0, 500, 77)] and errs == []
    assert f1.succeeded() and f1.value == f1.get() and f1.exception is None

    f3 = acc.append("t", 1, 3, 1, None, b"c", None, 1000)
    (b3,) = acc.drain([TopicPartition("t", 1)], 1 << 20)[TopicPartition("t", 1)]
    err = NotLeaderForPartitionError("moved")
    acc.complete(b3, -1, err)
    assert f3.failed() and f3.exception is err
    with pytest.raises(NotLeaderForPartitionError):
        f3.get()
    late: list = []
    f3.add_errback(late.append)
    assert late == [err]


def test_send_blocks_then_raises_when_buffer_memory_is_full():
    acc = make(buffer_memory=2048)
    for i in range(2):
        acc.append("t", i, 3, 1, None, b"v", None, 1000)
    with pytest.raises(BufferExhaustedError):
        acc.append("t", 2, 3, 1, None, b"v", None, 50)
    # Completing a batch frees its memory and lets a blocked append through.
    done = threading.Event()

    def blocked():
        acc.append("t", 2, 3, 1, None, b"v", None, 10000)
        done.set()

    t = threading.Thread(target=blocked)
    t.start()
    (b,) = acc.drain([TP0], 1 << 20)[TP0]
    acc.complete(b, 0, None)
    t.join(10)
    assert done.is_set()


def test_expired_batches_are_removed():
    acc = make(delivery_timeout_ms=10)
    acc.append("t", 0, 3, 1, None, b"v", None, 1000)
    b = acc.batches[TP0][0]
    assert acc.expired(b.created_ms + 5, set()) == []
    assert acc.expired(b.created_ms + 11, {TP0}) == []  # in flight: the sender decides
    assert acc.expired(b.created_ms + 11, set()) == [b]
    assert not acc.batches[TP0] and TP0 not in acc.open


def test_lz4_batches_decode():
    acc = make(compression=CODEC_LZ4, batch_size=1 << 16)
    for i in range(500):
        acc.append("t", 0, 3, 1, None, b"log line %d: all is well" % i, None, 1000)
    (b,) = acc.drain([TP0], 1 << 20)[TP0]
    buf = b"".join(b.close())
    assert len(buf) < b.builder.size_in_bytes / 3
    assert [r.value for r in decode_batch(buf)[1]][-1] == b"log line 499: all is well"


def test_abort_all_fails_waiting_batches():
    acc = make()
    f = acc.append("t", 0, 3, 1, None, b"v", None, 1000)
    acc.abort_all(KafkaTimeoutError("closing"))
    assert f.failed() and isinstance(f.exception, KafkaTimeoutError)
    assert acc.incomplete_batches() == []


def test_completed_batches_drop_their_record_bytes():
    acc = make()
    futs = [acc.append("t", 0, 3, 1, None, b"v" * 100, None, 1000) for _ in range(5)]
    (b,) = acc.drain([TP0], 1 << 20)[TP0]
    b.close()
    acc.complete(b, 10, None)
    assert b.builder is None and b.buffer is None  # kept futures keep no record bytes
    assert b.records_count == 5
    assert [f.get().offset for f in futs] == [10, 11, 12, 13, 14]
    assert b.append(1, None, b"late", None) == -1
