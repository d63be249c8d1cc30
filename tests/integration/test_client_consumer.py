"""Consumer against a real standalone broker process: assignment, seek and position, offset
resets, pause/resume, poll limits, long-poll, iteration, lz4, restarts and misuse."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from annal.client import Admin, Consumer, NewTopic, OffsetAndTimestamp, Producer, TopicPartition
from annal.errors import ConsumerClosedError, LocalUsageError, OffsetOutOfRangeError


def new_topic(broker, partitions: int = 1) -> str:
    name = "c-" + uuid.uuid4().hex[:10]
    with Admin(broker.bootstrap) as admin:
        admin.create_topics([NewTopic(name, partitions)])
    return name


def produce(broker, topic: str, n: int, start: int = 0, compression=None, partition=None, ts0=None) -> None:
    with Producer(broker.bootstrap, compression_type=compression, linger_ms=1) as p:
        for i in range(start, start + n):
            p.send(topic, b"%06d" % i, partition=partition,
                   timestamp_ms=None if ts0 is None else ts0 + i)
        p.flush(timeout=30)


def poll_until(c: Consumer, n: int, timeout_s: float = 30.0, **kw) -> list:
    out: list = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=200, **kw).values():
            out.extend(recs)
    return out


@pytest.mark.timeout(60)
def test_topics_assign_all_partitions_and_read_everything(broker):
    topic = new_topic(broker, 3)
    with Producer(broker.bootstrap) as p:
        for i in range(300):
            p.send(topic, b"%d" % i, key=b"%d" % i)
    with Consumer(topic, auto_offset_reset="earliest", bootstrap_servers=broker.bootstrap) as c:
        recs = poll_until(c, 300)
        assert c.assignment() == {TopicPartition(topic, i) for i in range(3)}
        assert c.subscription() == {topic}
        assert c.topics() >= {topic}
        assert c.partitions_for_topic(topic) == {0, 1, 2}
        assert c.partitions_for_topic("nope-" + uuid.uuid4().hex[:6]) is None
    assert sorted(int(r.value) for r in recs) == list(range(300))
    for tp in {TopicPartition(r.topic, r.partition) for r in recs}:
        offs = [r.offset for r in recs if (r.topic, r.partition) == tp]
        assert offs == list(range(len(offs)))  # in order, no gap, per partition


@pytest.mark.timeout(60)
def test_seek_position_and_offsets_api(broker):
    topic = new_topic(broker)
    tp = TopicPartition(topic, 0)
    produce(broker, topic, 100, ts0=1_700_000_000_000)
    with Consumer(auto_offset_reset="earliest", bootstrap_servers=broker.bootstrap) as c:
        c.assign([tp])
        assert c.assignment() == {tp}
        assert c.position(tp) == 0
        c.seek(tp, 37)
        assert c.position(tp) == 37
        recs = poll_until(c, 63)
        assert [r.offset for r in recs] == list(range(37, 100))  # records before 37 skipped
        assert c.position(tp) == 100
        c.seek_to_beginning(tp)
        assert c.position(tp) == 0
        assert poll_until(c, 1, max_records=1)[0].offset == 0
        assert c.position(tp) == 1
        c.seek_to_end()
        assert c.position(tp) == 100
        assert c.beginning_offsets([tp]) == {tp: 0}
        assert c.end_offsets([tp]) == {tp: 100}
        found = c.offsets_for_times({tp: 1_700_000_000_000 + 50})[tp]
        assert isinstance(found, OffsetAndTimestamp) and found.offset <= 50
        assert c.offsets_for_times({tp: 1_800_000_000_000})[tp] is None
        assert c.highwater(tp) in (None, 100)


@pytest.mark.timeout(60)
def test_max_records_and_leftovers_keep_order(broker):
    topic = new_topic(broker)
    produce(broker, topic, 500)
    with Consumer(topic, auto_offset_reset="earliest", bootstrap_servers=broker.bootstrap, max_poll_records=7) as c:
        seen = []
        deadline = time.monotonic() + 30
        while len(seen) < 500 and time.monotonic() < deadline:
            batch = c.poll(timeout_ms=200)
            assert sum(len(v) for v in batch.values()) <= 7
            for recs in batch.values():
                seen.extend(r.offset for r in recs)
        assert seen == list(range(500))
        assert c.position(TopicPartition(topic, 0)) == 500


@pytest.mark.timeout(60)
def test_auto_offset_reset_latest_and_long_poll(broker):
    topic = new_topic(broker)
    produce(broker, topic, 10)
    with Consumer(topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="latest", fetch_max_wait_ms=2000) as c:
        assert c.position(TopicPartition(topic, 0)) == 10
        t = threading.Thread(target=produce, args=(broker, topic, 5, 10))
        t.start()
        recs = poll_until(c, 5)
        t.join()
    assert [int(r.value) for r in recs] == [10, 11, 12, 13, 14]


@pytest.mark.timeout(60)
def test_offset_out_of_range(broker):
    topic = new_topic(broker)
    tp = TopicPartition(topic, 0)
    produce(broker, topic, 20)
    with Consumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="none") as c:
        c.assign([tp])
        c.seek(tp, 1000)
        with pytest.raises(OffsetOutOfRangeError):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                c.poll(timeout_ms=200)
    with Consumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([tp])
        c.seek(tp, 1000)
        recs = poll_until(c, 20)
        assert [r.offset for r in recs] == list(range(20))


@pytest.mark.timeout(60)
def test_pause_resume(broker):
    topic = new_topic(broker, 2)
    produce(broker, topic, 50, partition=0)
    produce(broker, topic, 50, partition=1)
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    with Consumer(topic, auto_offset_reset="earliest", bootstrap_servers=broker.bootstrap) as c:
        c.pause(tp0)
        assert c.paused() == {tp0}
        recs = poll_until(c, 50)
        assert {r.partition for r in recs} == {1}
        assert c.poll(timeout_ms=300) == {}
        c.resume(tp0)
        assert c.paused() == set()
        recs = poll_until(c, 50)
        assert {r.partition for r in recs} == {0}


@pytest.mark.timeout(60)
def test_lz4_and_deserializers_and_iteration(broker):
    topic = new_topic(broker)
    produce(broker, topic, 200, compression="lz4")
    with Consumer(
        topic,
        auto_offset_reset="earliest",
        bootstrap_servers=broker.bootstrap,
        value_deserializer=lambda v: int(v),
        key_deserializer=lambda k: k,
        consumer_timeout_ms=1000,
    ) as c:
        values = [r.value for r in c]  # stops after 1 s without a record
    assert values == list(range(200))


@pytest.mark.timeout(90)
def test_consumer_rides_through_broker_restart(broker):
    topic = new_topic(broker)
    produce(broker, topic, 100)
    with Consumer(topic, auto_offset_reset="earliest", bootstrap_servers=broker.bootstrap, retry_backoff_ms=50) as c:
        first = poll_until(c, 100)
        broker.restart()
        produce(broker, topic, 100, start=100)
        second = poll_until(c, 100)
    assert [r.offset for r in first + second] == list(range(200))


@pytest.mark.timeout(60)
def test_misuse_gives_clear_errors(broker):
    topic = new_topic(broker)
    with pytest.raises(LocalUsageError, match="zookeeper"):
        Consumer(topic, auto_offset_reset="earliest", bootstrap_servers=broker.bootstrap, group_id="g")
    with pytest.raises(LocalUsageError, match="auto_offset_reset"):
        Consumer(topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="smallest")
    with pytest.raises(TypeError):
        Consumer(42, auto_offset_reset="earliest", bootstrap_servers=broker.bootstrap)  # type: ignore[arg-type]
    c = Consumer(auto_offset_reset="earliest", bootstrap_servers=broker.bootstrap, group_id="g")
    with pytest.raises(LocalUsageError, match="zookeeper"):
        c.subscribe([topic])
    with pytest.raises(LocalUsageError, match="zookeeper"):
        c.commit()
    with pytest.raises(LocalUsageError, match="zookeeper"):
        c.committed(TopicPartition(topic, 0))
    with pytest.raises(LocalUsageError, match="not assigned"):
        c.seek(TopicPartition(topic, 0), 5)
    with pytest.raises(TypeError):
        c.assign(["not-a-tp"])  # type: ignore[list-item]
    c.assign([TopicPartition(topic, 0)])
    with pytest.raises(LocalUsageError, match="offset"):
        c.seek(TopicPartition(topic, 0), -1)
    c.close()
    c.close()
    with pytest.raises(ConsumerClosedError):
        c.poll()


@pytest.mark.timeout(60)
def test_topic_consumer_picks_up_a_recreated_topic_with_more_partitions(broker):
    topic = new_topic(broker, 1)
    produce(broker, topic, 5, partition=0)
    with Consumer(topic, auto_offset_reset="earliest", bootstrap_servers=broker.bootstrap, metadata_max_age_ms=200) as c:
        assert len(poll_until(c, 5)) == 5
        with Admin(broker.bootstrap) as admin:
            admin.delete_topics([topic])
            admin.create_topics([NewTopic(topic, 3)])
        produce(broker, topic, 1, start=99, partition=2)
        recs = poll_until(c, 1)
        assert [(r.partition, r.value) for r in recs] == [(2, b"000099")]
        assert c.assignment() == {TopicPartition(topic, p) for p in range(3)}


@pytest.mark.timeout(60)
def test_corrupt_batch_is_detected_by_its_crc(broker):
    from annal.errors import CorruptRecordError

    topic = new_topic(broker)
    tp = TopicPartition(topic, 0)
    produce(broker, topic, 10)
    segments = sorted((broker.data_dir / f"{topic}-0").glob("*.log"))
    assert segments, "no segment file found"
    seg = segments[-1]
    data = bytearray(seg.read_bytes().rstrip(b"\0"))  # a preallocated tail stays untouched
    data[-3] ^= 0xFF  # inside the last record's value
    with open(seg, "r+b") as f:
        f.seek(len(data) - 3)
        f.write(bytes([data[-3]]))
    with Consumer(auto_offset_reset="earliest", bootstrap_servers=broker.bootstrap) as c:
        c.assign([tp])
        with pytest.raises(CorruptRecordError):
            poll_until(c, 10, timeout_s=15)
        assert c.position(tp) < 10  # the position stays before the bad batch
    with Consumer(auto_offset_reset="earliest", bootstrap_servers=broker.bootstrap, check_crcs=False) as c:
        c.assign([tp])
        recs = poll_until(c, 10)
        assert len(recs) == 10 and recs[-1].value != b"%06d" % 9
