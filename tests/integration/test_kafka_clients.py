"""Kafka clients against the Kafka listener of a standalone broker: kcat (Debian's package),
kafka-python, confluent-kafka (librdkafka) and aiokafka, each with default settings.

Records produced by one client are read back byte for byte (key, value, headers) by another and
by Annal's own SDK over gRPC and the data port."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
from typing import Any

import pytest

from annal.client.admin import Admin
from annal.client.consumer import Consumer as AnnalConsumer
from annal.client.structs import NewTopic
from harness.broker import BrokerProcess

pytestmark = pytest.mark.timeout(180)

KCAT = shutil.which("kcat")
needs_kcat = pytest.mark.skipif(KCAT is None, reason="kcat is not installed (scripts/setup.sh installs it)")


def _create(broker: BrokerProcess, topic: str, partitions: int) -> None:
    with Admin(bootstrap_servers=broker.bootstrap) as admin:
        admin.create_topics([NewTopic(topic, partitions)])


def _annal_records(broker: BrokerProcess, topic: str, count: int) -> list[tuple[Any, Any, list[tuple[str, Any]]]]:
    out = []
    with AnnalConsumer(topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                       consumer_timeout_ms=5000) as c:
        for r in c:
            out.append((r.key, r.value, [(k, bytes(v) if v is not None else None) for k, v in r.headers]))
            if len(out) == count:
                break
    return out


def _confluent_records(broker: BrokerProcess, topic: str, count: int) -> list[tuple[Any, Any, list[tuple[str, Any]]]]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": broker.kafka_bootstrap, "group.id": "unused", "enable.auto.commit": False})
    try:
        md = c.list_topics(topic, timeout=10)
        c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
        out = []
        deadline = time.monotonic() + 30
        while len(out) < count and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                assert m.error() is None, m.error()
                out.append((m.key(), m.value(), list(m.headers() or [])))
        return out
    finally:
        c.close()


def test_kcat_lists_brokers_and_topics(broker: BrokerProcess) -> None:
    if KCAT is None:
        pytest.skip("kcat is not installed")
    _create(broker, "orders", 3)
    out = subprocess.run([KCAT, "-b", broker.kafka_bootstrap, "-L", "-J"], capture_output=True, timeout=30,
                         check=True).stdout
    md = json.loads(out)
    assert [(b["id"], b["name"]) for b in md["brokers"]] == [(broker.broker_id, broker.kafka_bootstrap)]
    [topic] = [t for t in md["topics"] if t["topic"] == "orders"]
    assert sorted(p["partition"] for p in topic["partitions"]) == [0, 1, 2]
    assert all(p["leader"] == broker.broker_id and p["replicas"] == [{"id": broker.broker_id}]
               and p["isrs"] == [{"id": broker.broker_id}] for p in topic["partitions"])


def test_kafka_python_and_confluent_metadata(broker: BrokerProcess) -> None:
    from confluent_kafka.admin import AdminClient
    from kafka import KafkaAdminClient

    _create(broker, "events", 2)
    md = AdminClient({"bootstrap.servers": broker.kafka_bootstrap}).list_topics(timeout=10)
    assert md.controller_id == broker.broker_id
    assert sorted(md.topics["events"].partitions) == [0, 1]
    assert md.cluster_id
    admin = KafkaAdminClient(bootstrap_servers=broker.kafka_bootstrap)
    try:
        described = admin.describe_topics(["events"])
        assert [len(t["partitions"]) for t in described] == [2]
        cluster = admin.describe_cluster()
        assert cluster["controller_id"] == broker.broker_id
        assert cluster["cluster_id"] == md.cluster_id
    finally:
        admin.close()


def test_records_from_every_client_read_byte_for_byte_by_the_others(broker: BrokerProcess) -> None:
    import aiokafka
    from confluent_kafka import Producer as CProducer
    from kafka import KafkaProducer

    _create(broker, "mixed", 1)
    expected: list[tuple[Any, Any, list[tuple[str, Any]]]] = []

    kp = KafkaProducer(bootstrap_servers=broker.kafka_bootstrap, compression_type="lz4")
    for i in range(20):
        headers = [("source", b"kafka-python"), ("i", str(i).encode())]
        kp.send("mixed", b"kp-%d" % i if i % 5 else None, key=b"k%d" % i, headers=headers).get(30)
        expected.append((b"k%d" % i, b"kp-%d" % i if i % 5 else None, headers))
    kp.close()

    cp = CProducer({"bootstrap.servers": broker.kafka_bootstrap, "compression.type": "lz4", "linger.ms": 5})
    errors: list[Any] = []
    for i in range(20):
        headers = [("source", b"confluent")]
        cp.produce("mixed", value=b"cf-%d" % i, key=None if i == 3 else b"c%d" % i, headers=headers,
                   on_delivery=lambda err, msg: errors.append(err) if err else None)
        expected.append((None if i == 3 else b"c%d" % i, b"cf-%d" % i, headers))
    assert cp.flush(30) == 0 and not errors

    async def aio() -> None:
        p = aiokafka.AIOKafkaProducer(bootstrap_servers=broker.kafka_bootstrap)
        await p.start()
        try:
            for i in range(10):
                await p.send_and_wait("mixed", b"aio-%d" % i, key=b"a%d" % i, headers=[("source", b"aiokafka")])
        finally:
            await p.stop()

    asyncio.run(aio())
    expected += [(b"a%d" % i, b"aio-%d" % i, [("source", b"aiokafka")]) for i in range(10)]

    if KCAT is not None:
        subprocess.run([KCAT, "-b", broker.kafka_bootstrap, "-P", "-t", "mixed", "-K", ":", "-H", "source=kcat"],
                       input=b"kc1:kcat one\nkc2:kcat two\n", check=True, timeout=30)
        expected += [(b"kc1", b"kcat one", [("source", b"kcat")]), (b"kc2", b"kcat two", [("source", b"kcat")])]

    assert _confluent_records(broker, "mixed", len(expected)) == expected
    assert _annal_records(broker, "mixed", len(expected)) == expected

    from kafka import KafkaConsumer

    kc = KafkaConsumer("mixed", bootstrap_servers=broker.kafka_bootstrap, auto_offset_reset="earliest",
                       consumer_timeout_ms=5000)
    got = [(m.key, m.value, [(k, v) for k, v in m.headers]) for m in kc]
    kc.close()
    assert got == expected


def test_codecs_the_broker_cannot_read_are_refused_and_nothing_is_written(broker: BrokerProcess) -> None:
    from confluent_kafka import KafkaError, Producer as CProducer

    _create(broker, "codecs", 1)
    for codec in ("gzip", "snappy", "zstd"):
        p = CProducer({"bootstrap.servers": broker.kafka_bootstrap, "compression.type": codec,
                       "enable.idempotence": False, "retries": 0})
        results: list[Any] = []
        p.produce("codecs", b"x" * 100, on_delivery=lambda err, msg: results.append(err))
        p.flush(30)
        assert len(results) == 1 and results[0] is not None
        assert results[0].code() == KafkaError.UNSUPPORTED_COMPRESSION_TYPE, results[0]
    broker.wait_for_log("UNSUPPORTED|not supported")
    with Admin(bootstrap_servers=broker.bootstrap) as admin:
        [t] = admin.describe_topics(["codecs"])
    assert t.partitions[0].log_end_offset == 0


def test_acks_and_consume_from_timestamp_and_committed_offsets(broker: BrokerProcess) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    _create(broker, "acks", 1)
    for acks in (0, 1, "all"):
        p = KafkaProducer(bootstrap_servers=broker.kafka_bootstrap, acks=acks, enable_idempotence=acks == "all")
        for i in range(5):
            p.send("acks", b"%s-%d" % (str(acks).encode(), i), timestamp_ms=1_000_000 + i * 1000 + (0 if acks == 0 else 100_000 if acks == 1 else 200_000))
        p.flush(30)
        p.close()
    tp = TopicPartition("acks", 0)
    c = KafkaConsumer(bootstrap_servers=broker.kafka_bootstrap, group_id="ts", enable_auto_commit=False)
    try:
        assert c.end_offsets([tp])[tp] == 15
        assert c.beginning_offsets([tp])[tp] == 0
        found = c.offsets_for_times({tp: 1_100_000})[tp]
        assert found is not None and found.offset == 5
        assert c.offsets_for_times({tp: 9_000_000})[tp] is None
        c.assign([tp])
        c.seek(tp, found.offset)
        values = []
        deadline = time.monotonic() + 30
        while len(values) < 10 and time.monotonic() < deadline:
            for recs in c.poll(500).values():
                values += [r.value for r in recs]
        assert values[:5] == [b"1-%d" % i for i in range(5)]
        c.commit({tp: __import__("kafka").OffsetAndMetadata(7, "", -1)})
        assert c.committed(tp) == 7
    finally:
        c.close()
    again = KafkaConsumer("acks", bootstrap_servers=broker.kafka_bootstrap, group_id="ts", consumer_timeout_ms=5000)
    try:
        first = next(iter(again))
        assert first.offset == 7
    finally:
        again.close()


def _group_run(consumers: list[Any], poll: Any, assigned: Any, close: Any, topic_records: int) -> None:
    """Two consumers share a topic, each polled by its own thread as applications do (a
    member that stops polling cannot finish a rebalance: the follower's SyncGroup waits for
    the leader's); then the first leaves and the second takes every partition."""
    seen: dict[int, set[tuple[int, int]]] = {0: set(), 1: set()}
    owned: dict[int, set[int]] = {0: set(), 1: set()}
    stop = [threading.Event(), threading.Event()]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        c = consumers[i]
        try:
            while not stop[i].is_set():
                got = set(poll(c))
                seen[i] |= got
                owned[i] = set(assigned(c))
            close(c)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in (0, 1)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not errors:
        if len(seen[0] | seen[1]) == topic_records and owned[0] and owned[1] and owned[0] | owned[1] == {0, 1, 2, 3}:
            break
        time.sleep(0.1)
    a0, a1 = owned[0], owned[1]
    assert not errors, errors
    assert a0 and a1 and not (a0 & a1) and a0 | a1 == {0, 1, 2, 3}
    assert len(seen[0] | seen[1]) == topic_records
    stop[0].set()
    threads[0].join(30)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and owned[1] != {0, 1, 2, 3} and not errors:
        time.sleep(0.1)
    stop[1].set()
    threads[1].join(30)
    assert not errors, errors
    assert owned[1] == {0, 1, 2, 3}


def _fill(broker: BrokerProcess, topic: str, n: int) -> None:
    from kafka import KafkaProducer

    _create(broker, topic, 4)
    p = KafkaProducer(bootstrap_servers=broker.kafka_bootstrap)
    for i in range(n):
        p.send(topic, b"%d" % i, partition=i % 4)
    p.flush(30)
    p.close()


def test_kafka_python_group_of_two_then_one_takes_over(broker: BrokerProcess) -> None:
    from kafka import KafkaConsumer

    _fill(broker, "kpg", 200)
    cs = [KafkaConsumer("kpg", group_id="kp", bootstrap_servers=broker.kafka_bootstrap,
                        auto_offset_reset="earliest") for _ in range(2)]
    _group_run(cs, lambda c: [(r.partition, r.offset) for recs in c.poll(200).values() for r in recs],
               lambda c: {tp.partition for tp in c.assignment()}, lambda c: c.close(), 200)


def test_confluent_group_of_two_then_one_takes_over(broker: BrokerProcess) -> None:
    from confluent_kafka import Consumer

    _fill(broker, "cfg", 200)
    cs = [Consumer({"bootstrap.servers": broker.kafka_bootstrap, "group.id": "cf", "auto.offset.reset": "earliest",
                    "partition.assignment.strategy": "range"}) for _ in range(2)]
    for c in cs:
        c.subscribe(["cfg"])
    _group_run(cs, lambda c: [(m.partition(), m.offset()) for m in c.consume(500, 0.2) if m.error() is None],
               lambda c: {tp.partition for tp in c.assignment()}, lambda c: c.close(), 200)


def test_aiokafka_group_of_two_then_one_takes_over(broker: BrokerProcess) -> None:
    import aiokafka

    _fill(broker, "aig", 200)

    async def run() -> None:
        cs = [aiokafka.AIOKafkaConsumer("aig", group_id="ai", bootstrap_servers=broker.kafka_bootstrap,
                                        auto_offset_reset="earliest") for _ in range(2)]
        for c in cs:
            await c.start()
        try:
            seen: set[tuple[int, int]] = set()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                for c in cs:
                    for recs in (await c.getmany(timeout_ms=200)).values():
                        seen |= {(r.partition, r.offset) for r in recs}
                parts = [{tp.partition for tp in c.assignment()} for c in cs]
                if len(seen) == 200 and all(parts) and not (parts[0] & parts[1]):
                    break
            assert len(seen) == 200
            assert parts[0] | parts[1] == {0, 1, 2, 3} and not (parts[0] & parts[1])
            await cs[0].stop()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and {tp.partition for tp in cs[1].assignment()} != {0, 1, 2, 3}:
                await cs[1].getmany(timeout_ms=200)
            assert {tp.partition for tp in cs[1].assignment()} == {0, 1, 2, 3}
        finally:
            for c in cs:
                await c.stop()

    asyncio.run(run())


def test_group_offsets_survive_a_broker_restart(broker: BrokerProcess) -> None:
    from kafka import KafkaConsumer, TopicPartition

    _fill(broker, "persist", 40)
    c = KafkaConsumer("persist", group_id="p", bootstrap_servers=broker.kafka_bootstrap,
                      auto_offset_reset="earliest", consumer_timeout_ms=5000, enable_auto_commit=False)
    assert len(list(c)) == 40
    c.commit()
    c.close()
    broker.restart()
    c = KafkaConsumer(bootstrap_servers=broker.kafka_bootstrap, group_id="p", enable_auto_commit=False)
    try:
        assert {p: c.committed(TopicPartition("persist", p)) for p in range(4)} == {p: 10 for p in range(4)}
    finally:
        c.close()


def test_a_long_poll_fetch_is_woken_by_a_produce(broker: BrokerProcess) -> None:
    from confluent_kafka import Consumer, Producer as CProducer, TopicPartition

    _create(broker, "wake", 1)
    c = Consumer({"bootstrap.servers": broker.kafka_bootstrap, "group.id": "w", "fetch.wait.max.ms": 10000})
    c.assign([TopicPartition("wake", 0, 0)])
    got: list[bytes] = []

    def consume() -> None:
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            for m in c.consume(1, 1.0):
                if m.error() is None:
                    got.append(m.value())

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(1.0)  # the consumer is parked in a long-poll by now
    p = CProducer({"bootstrap.servers": broker.kafka_bootstrap})
    p.produce("wake", b"hello")
    p.flush(10)
    t.join(40)
    c.close()
    assert got == [b"hello"]
