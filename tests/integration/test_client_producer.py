"""Producer against a real standalone broker process: round trips, partitioning, acks, errors,
flush/close semantics, and delivery across broker restarts and crashes."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from annal.client import Admin, Consumer, NewTopic, Producer, TopicPartition
from annal.errors import (
    AnnalError,
    BufferExhaustedError,
    InvalidRequiredAcksError,
    KafkaTimeoutError,
    LocalUsageError,
    ProducerClosedError,
    UnsupportedCompressionTypeError,
    UnknownTopicOrPartitionError,
)
from annal.client._partitioner import partition_for_key


def new_topic(broker, partitions: int = 1) -> str:
    name = "t-" + uuid.uuid4().hex[:10]
    with Admin(broker.bootstrap) as admin:
        admin.create_topics([NewTopic(name, partitions)])
    return name


def read_all(broker, topic: str, expected: int, timeout_s: float = 30.0, **kwargs) -> dict:
    """{TopicPartition: [records]} of every record in ``topic``, waiting for ``expected``."""
    out: dict = {}
    n = 0
    with Consumer(topic, auto_offset_reset="earliest", bootstrap_servers=broker.bootstrap, **kwargs) as c:
        deadline = time.monotonic() + timeout_s
        while n < expected and time.monotonic() < deadline:
            for tp, recs in c.poll(timeout_ms=200).items():
                out.setdefault(tp, []).extend(recs)
                n += len(recs)
    return out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("compression", [None, "lz4"])
def test_round_trip_keys_headers_nulls(broker, compression):
    topic = new_topic(broker, 3)
    sent = []
    with Producer(broker.bootstrap, compression_type=compression, linger_ms=2) as p:
        futs = []
        for i in range(300):
            key = None if i % 3 == 0 else b"key-%d" % (i % 7)
            value = None if i % 10 == 0 else (b"value-%d " % i) * (i % 5 + 1)
            headers = [("n", str(i).encode()), ("null", None)] if i % 4 == 0 else None
            futs.append(p.send(topic, value, key=key, headers=headers, timestamp_ms=1_700_000_000_000 + i))
            sent.append((key, value, headers))
        p.flush(timeout=30)
        metas = [f.get(timeout=1) for f in futs]
    assert all(f.succeeded() and not f.failed() and f.exception is None for f in futs)
    got = read_all(broker, topic, len(sent))
    by_pos = {(tp.partition, r.offset): r for tp, recs in got.items() for r in recs}
    assert len(by_pos) == len(sent)
    for i, (md, (key, value, headers)) in enumerate(zip(metas, sent)):
        assert md.topic == topic
        assert md.timestamp == 1_700_000_000_000 + i
        r = by_pos[(md.partition, md.offset)]
        assert (r.key, r.value) == (key, value)
        assert r.timestamp == md.timestamp
        assert list(r.headers) == (list(headers) if headers else [])
        if key is not None:
            assert md.partition == partition_for_key(key, 3)


@pytest.mark.timeout(60)
def test_same_key_same_partition_and_offsets_in_send_order(broker):
    topic = new_topic(broker, 4)
    with Producer(broker.bootstrap) as p:
        futs = [p.send(topic, b"%d" % i, key=b"user-42") for i in range(200)]
        metas = [f.get(timeout=30) for f in futs]
    assert {m.partition for m in metas} == {partition_for_key(b"user-42", 4)}
    offsets = [m.offset for m in metas]
    assert offsets == list(range(offsets[0], offsets[0] + 200))


@pytest.mark.timeout(60)
def test_keyless_records_stick_to_one_partition_per_batch(broker):
    topic = new_topic(broker, 4)
    with Producer(broker.bootstrap, linger_ms=60_000, batch_size=1024) as p:
        futs = [p.send(topic, b"x" * 100) for _ in range(60)]
        p.flush(timeout=30)
        metas = [f.get() for f in futs]
    # ~9 records fill a 1 KiB batch: consecutive records share a partition until the batch
    # is full, then move on to another one.
    runs = []
    for m in metas:
        if runs and runs[-1][0] == m.partition:
            runs[-1][1] += 1
        else:
            runs.append([m.partition, 1])
    assert len(runs) >= 4
    assert all(count >= 5 for _p, count in runs[:-1])
    assert len({p for p, _c in runs}) >= 2


@pytest.mark.timeout(60)
def test_callbacks_errbacks_and_serializers(broker):
    topic = new_topic(broker)
    done: list = []
    errors: list = []
    with Producer(
        broker.bootstrap, key_serializer=str.encode, value_serializer=lambda v: repr(v).encode()
    ) as p:
        f = p.send(topic, {"a": 1}, key="k").add_callback(done.append).add_errback(errors.append)
        md = f.get(timeout=30)
        late: list = []
        f.add_callback(late.append, )  # already done: called at once
        assert late == [md]
    assert done == [md] and errors == []
    recs = read_all(broker, topic, 1)[TopicPartition(topic, 0)]
    assert recs[0].key == b"k" and recs[0].value == b"{'a': 1}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("acks", [0, 1, "all", -1])
def test_acks(broker, acks):
    topic = new_topic(broker)
    with Producer(broker.bootstrap, acks=acks) as p:
        futs = [p.send(topic, b"v%d" % i) for i in range(50)]
        p.flush(timeout=30)
        metas = [f.get() for f in futs]
    if acks == 0:
        assert all(m.offset == -1 for m in metas)
    else:
        assert [m.offset for m in metas] == list(range(50))
    recs = read_all(broker, topic, 50)[TopicPartition(topic, 0)]
    assert [r.value for r in recs] == [b"v%d" % i for i in range(50)]


@pytest.mark.timeout(60)
def test_bad_arguments_give_clear_errors(broker):
    topic = new_topic(broker, 2)
    with pytest.raises(InvalidRequiredAcksError):
        Producer(broker.bootstrap, acks=2)
    with pytest.raises(UnsupportedCompressionTypeError):
        Producer(broker.bootstrap, compression_type="zstd")
    with pytest.raises(LocalUsageError, match="batch_size"):
        Producer(broker.bootstrap, batch_size=0)
    with pytest.raises(LocalUsageError, match="bootstrap"):
        Producer("no-port-here")
    with Producer(broker.bootstrap, max_block_ms=5000) as p:
        with pytest.raises(TypeError, match="value must be bytes"):
            p.send(topic, "a str")
        with pytest.raises(TypeError, match="key must be bytes"):
            p.send(topic, b"v", key=12)
        with pytest.raises(TypeError, match="headers"):
            p.send(topic, b"v", headers=[("only-key",)])
        with pytest.raises(TypeError, match="timestamp_ms"):
            p.send(topic, b"v", timestamp_ms="now")
        with pytest.raises(TypeError, match="topic"):
            p.send(None, b"v")
        for unhashable in (["a", "list"], {"a": "dict"}):
            # Both sticky-batch paths look the topic up under the accumulator's lock; a bad
            # topic must not leave it held (the sends below would hang).
            with pytest.raises(TypeError, match="topic"):
                p.send(unhashable, b"v")
            with pytest.raises(TypeError, match="topic"):
                p.send(unhashable, b"v", timestamp_ms=1)
        with pytest.raises(UnknownTopicOrPartitionError, match="no partition 5"):
            p.send(topic, b"v", partition=5)
        with pytest.raises(UnknownTopicOrPartitionError, match="does not exist"):
            p.send("no-such-topic-" + uuid.uuid4().hex[:6], b"v")
        assert p.partitions_for(topic) == {0, 1}
        assert p.send(topic, bytearray(b"ok")).get(timeout=30).offset == 0
    with pytest.raises(ProducerClosedError):
        p.send(topic, b"after close")
    p.close()  # idempotent


@pytest.mark.timeout(60)
def test_flush_waits_and_close_sends_everything(broker):
    topic = new_topic(broker)
    p = Producer(broker.bootstrap, linger_ms=60_000)  # nothing would leave before flush
    futs = [p.send(topic, b"%d" % i) for i in range(100)]
    assert not any(f.is_done() for f in futs)
    p.flush(timeout=30)
    assert all(f.succeeded() for f in futs)
    futs2 = [p.send(topic, b"%d" % i) for i in range(100, 200)]
    p.close()  # flushes
    assert [f.get(0).offset for f in futs + futs2] == list(range(200))


@pytest.mark.timeout(60)
def test_close_with_zero_timeout_fails_pending_records(broker):
    topic = new_topic(broker)
    p = Producer(broker.bootstrap, linger_ms=60_000)
    futs = [p.send(topic, b"%d" % i) for i in range(10)]
    p.close(timeout=0)
    for f in futs:
        assert f.is_done()
        if f.failed():
            assert isinstance(f.exception, ProducerClosedError)
            with pytest.raises(ProducerClosedError):
                f.get()
    n_ok = sum(f.succeeded() for f in futs)
    got = read_all(broker, topic, n_ok, timeout_s=30 if n_ok else 1)
    assert sum(len(v) for v in got.values()) == n_ok


@pytest.mark.timeout(60)
def test_buffer_exhausted_when_broker_is_gone(broker):
    topic = new_topic(broker)
    p = Producer(
        broker.bootstrap, batch_size=1024, buffer_memory=4096, max_block_ms=300, delivery_timeout_ms=60_000
    )
    try:
        p.send(topic, b"warm-up").get(timeout=30)
        broker.kill()
        with pytest.raises(BufferExhaustedError):
            for _ in range(1000):
                p.send(topic, b"x" * 500)
    finally:
        p.close(timeout=0)


@pytest.mark.timeout(60)
def test_delivery_timeout_fails_futures_when_broker_stays_down(broker):
    topic = new_topic(broker)
    p = Producer(broker.bootstrap, delivery_timeout_ms=1500, retry_backoff_ms=50, request_timeout_ms=1000)
    try:
        p.send(topic, b"warm-up").get(timeout=30)
        broker.kill()
        f = p.send(topic, b"lost")
        with pytest.raises(KafkaTimeoutError, match="delivery_timeout_ms"):
            f.get(timeout=30)
        assert f.failed()
    finally:
        p.close(timeout=0)


def _produce_through_outage(broker, outage, n: int = 3000):
    """Send n numbered records from one thread while ``outage()`` runs in another; return the
    futures in send order."""
    topic = new_topic(broker)
    futs = []
    with Producer(
        broker.bootstrap,
        linger_ms=1,
        batch_size=2048,
        retry_backoff_ms=50,
        request_timeout_ms=3000,
        delivery_timeout_ms=60_000,
        max_in_flight_requests_per_connection=5,
    ) as p:
        halfway = threading.Event()
        t = threading.Thread(target=lambda: (halfway.wait(30), outage()))
        t.start()
        for i in range(n):
            futs.append(p.send(topic, b"%08d" % i))
            if i == n // 3:
                halfway.set()
            if i % 100 == 0:
                time.sleep(0.005)  # spread the sends over the outage
        t.join()
        p.flush(timeout=60)
    return topic, futs


def _check_no_silent_loss(broker, topic, futs):
    ok = [(i, f.get(0)) for i, f in enumerate(futs) if f.succeeded()]
    failed = [f for f in futs if f.failed()]
    assert len(ok) + len(failed) == len(futs)
    for f in failed:
        assert isinstance(f.exception, AnnalError)
    # Order: offsets of the acknowledged records grow with their send order.
    offsets = [md.offset for _i, md in ok]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    # Every acknowledged record is in the log at the offset it was given.
    recs = read_all(broker, topic, offsets[-1] + 1 if offsets else 0)
    by_offset = {r.offset: r.value for r in recs.get(TopicPartition(topic, 0), [])}
    for i, md in ok:
        assert by_offset.get(md.offset) == b"%08d" % i, f"record {i} not at offset {md.offset}"
    return len(ok)


@pytest.mark.timeout(120)
def test_order_and_delivery_across_broker_restart(broker):
    topic, futs = _produce_through_outage(broker, lambda: broker.restart())
    assert _check_no_silent_loss(broker, topic, futs) == len(futs)  # all retried through
    assert any(f[0].attempts > 0 for f in futs)  # the outage did make batches retry


@pytest.mark.timeout(120)
def test_no_silent_loss_when_broker_is_killed_and_restarted(broker):
    def crash():
        broker.kill()
        time.sleep(0.3)  # the outage itself: the producer must ride it out
        broker.start()

    topic, futs = _produce_through_outage(broker, crash)
    assert _check_no_silent_loss(broker, topic, futs) == len(futs)
    assert any(f[0].attempts > 0 for f in futs)


@pytest.mark.timeout(60)
def test_non_retriable_broker_error_fails_the_future_with_its_type(broker):
    from annal.errors import MessageSizeTooLargeError

    topic = "big-" + uuid.uuid4().hex[:8]
    with Admin(broker.bootstrap) as admin:
        admin.create_topics([NewTopic(topic, 1, {"max_message_bytes": 2048})])
    with Producer(broker.bootstrap, linger_ms=0) as p:
        big = p.send(topic, b"x" * 10_000)
        with pytest.raises(MessageSizeTooLargeError):
            big.get(timeout=30)
        assert big.failed() and big[0].attempts == 0  # not retried
        small = p.send(topic, b"fits")
        assert small.get(timeout=30).offset == 0  # the partition still works


@pytest.mark.timeout(90)
def test_one_producer_shared_by_threads(broker):
    topic = new_topic(broker, 3)
    results: dict = {}
    with Producer(broker.bootstrap, batch_size=4096) as p:

        def worker(w: int) -> None:
            key = b"worker-%d" % w
            futs = []
            for i in range(3000):
                # keyed and keyless records interleaved, through both send() paths
                futs.append(p.send(topic, b"%d-%d" % (w, i), key=key if i % 2 else None))
            results[w] = futs

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        p.flush(timeout=60)
    positions = set()
    for w, futs in results.items():
        metas = [f.get(0) for f in futs]
        keyed = [m for i, m in enumerate(metas) if i % 2]
        assert len({m.partition for m in keyed}) == 1
        assert [m.offset for m in keyed] == sorted(m.offset for m in keyed)  # per-key order
        positions.update((m.partition, m.offset) for m in metas)
    assert len(positions) == 12000  # every record has its own place
    got = read_all(broker, topic, 12000)
    assert sum(len(v) for v in got.values()) == 12000


@pytest.mark.timeout(60)
def test_metadata_is_re_read_every_metadata_max_age_ms(broker):
    # Nothing fails here, so only the periodic refresh can tell the producer that the topic
    # was re-created with three partitions.
    topic = new_topic(broker, 1)
    with Producer(broker.bootstrap, metadata_max_age_ms=300) as p:
        assert p.send(topic, b"before").get(timeout=30).partition == 0
        assert p.partitions_for(topic) == {0}
        with Admin(broker.bootstrap) as admin:
            admin.delete_topics([topic])
            admin.create_topics([NewTopic(topic, 3)])
        deadline = time.monotonic() + 20
        while p.partitions_for(topic) != {0, 1, 2} and time.monotonic() < deadline:
            time.sleep(0.1)
        assert p.partitions_for(topic) == {0, 1, 2}
        metas = [p.send(topic, b"k%d" % i, key=b"k%d" % i).get(timeout=30) for i in range(30)]
        assert {m.partition for m in metas} == {0, 1, 2}
    with pytest.raises(LocalUsageError):
        Producer(broker.bootstrap, metadata_max_age_ms=0)


@pytest.mark.timeout(60)
def test_a_send_that_fails_on_a_dead_connection_is_retried_after_the_backoff(broker, monkeypatch):
    """The connection dies while idle (here: shut down under the producer); the next request
    fails in the write and its batch goes back to wait ``retry_backoff_ms``. The sender must
    wake for that retry, not sleep until the next metadata refresh (5 minutes by default)."""
    import socket

    from annal.client import _connection

    topic = new_topic(broker)
    orig = _connection.DataConnection.receive
    armed = {"on": False}

    def receive(conn):
        if armed["on"] and conn.in_flight and conn.sock is not None:
            armed["on"] = False
            conn.sock.shutdown(socket.SHUT_RDWR)  # this answer is still read; the next write fails
        return orig(conn)

    monkeypatch.setattr(_connection.DataConnection, "receive", receive)
    with Producer(broker.bootstrap, linger_ms=0, retry_backoff_ms=100) as p:
        assert p.send(topic, b"a").get(10).offset == 0
        armed["on"] = True
        assert p.send(topic, b"b").get(10).offset == 1
        assert p.send(topic, b"c").get(10).offset == 2
