"""Kafka clients against a 3-broker cluster (ZooKeeper): bootstrapped at one broker they find
every partition's leader; a group's offsets committed through the Kafka API are read by Annal's
SDK and the other way round; a broker killed and restarted while a producer runs."""

from __future__ import annotations

import time
from typing import Any

import pytest

from annal.client.admin import Admin
from annal.client.consumer import Consumer as AnnalConsumer
from annal.client.structs import NewTopic, TopicPartition
from harness.zookeeper import ZkCluster

pytestmark = pytest.mark.timeout(240)


def _start(zk_cluster: ZkCluster, topic: str, partitions: int = 6) -> None:
    zk_cluster.start(1, 2, 3)
    zk_cluster.wait_registered({1, 2, 3})
    with Admin(bootstrap_servers=zk_cluster.bootstrap) as admin:
        admin.create_topics([NewTopic(topic, partitions)])


def _confluent_consume(bootstrap: str, topic: str, count: int) -> list[Any]:
    from confluent_kafka import Consumer, TopicPartition as CTP

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([CTP(topic, p, 0) for p in parts])
        out: list[Any] = []
        deadline = time.monotonic() + 60
        while len(out) < count and time.monotonic() < deadline:
            out += [(m.partition(), m.value()) for m in c.consume(1000, 0.5) if m.error() is None]
        return out
    finally:
        c.close()


def test_clients_bootstrapped_at_one_broker_find_every_leader(zk_cluster: ZkCluster) -> None:
    from confluent_kafka import Producer as CProducer
    from confluent_kafka.admin import AdminClient
    from kafka import KafkaProducer

    _start(zk_cluster, "spread")
    one = zk_cluster.brokers[2].kafka_bootstrap
    admin = AdminClient({"bootstrap.servers": one})
    # Broker 2 learns of the others and of the new topic through its ZooKeeper watches: wait
    # until it has.
    deadline = time.monotonic() + 30
    md = admin.list_topics(timeout=10)
    while (len(md.brokers) < 3 or "spread" not in md.topics) and time.monotonic() < deadline:
        time.sleep(0.2)
        md = admin.list_topics(timeout=10)
    assert {b.id: f"{b.host}:{b.port}" for b in md.brokers.values()} == {
        i: b.kafka_bootstrap for i, b in zk_cluster.brokers.items()}
    leaders = {p.id: p.leader for p in md.topics["spread"].partitions.values()}
    assert set(leaders.values()) == {1, 2, 3}
    assert md.controller_id in (1, 2, 3)

    kp = KafkaProducer(bootstrap_servers=one)
    for p in range(6):
        kp.send("spread", b"kp-%d" % p, partition=p).get(30)
    kp.close()
    cp = CProducer({"bootstrap.servers": one})
    for p in range(6):
        cp.produce("spread", b"cf-%d" % p, partition=p)
    assert cp.flush(30) == 0

    got = _confluent_consume(one, "spread", 12)
    assert sorted(got) == sorted([(p, b"kp-%d" % p) for p in range(6)] + [(p, b"cf-%d" % p) for p in range(6)])
    with AnnalConsumer("spread", bootstrap_servers=zk_cluster.bootstrap, auto_offset_reset="earliest",
                       consumer_timeout_ms=5000) as c:
        assert sorted((r.partition, r.value) for r in c) == sorted(got)


def test_group_offsets_are_shared_between_the_kafka_api_and_annal_sdk(zk_cluster: ZkCluster) -> None:
    from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata
    from kafka import TopicPartition as KTP

    _start(zk_cluster, "shared", partitions=3)
    bootstrap = zk_cluster.brokers[1].kafka_bootstrap
    p = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(30):
        p.send("shared", b"%d" % i, partition=i % 3)
    p.flush(30)
    p.close()

    kc = KafkaConsumer("shared", group_id="both", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                       enable_auto_commit=False, consumer_timeout_ms=5000)
    assert len(list(kc)) == 30
    kc.commit()
    kc.close()
    with AnnalConsumer(group_id="both", zookeeper=zk_cluster.hosts, bootstrap_servers=zk_cluster.bootstrap) as ac:
        assert {p: ac.committed(TopicPartition("shared", p)) for p in range(3)} == {0: 10, 1: 10, 2: 10}
        ac.assign([TopicPartition("shared", p) for p in range(3)])
        ac.commit({TopicPartition("shared", 1): 4})
    kc = KafkaConsumer(bootstrap_servers=bootstrap, group_id="both", enable_auto_commit=False)
    try:
        assert kc.committed(KTP("shared", 1)) == 4
        assert kc.committed(KTP("shared", 0)) == 10
        kc.commit({KTP("shared", 2): OffsetAndMetadata(2, "", -1)})
    finally:
        kc.close()
    with AnnalConsumer(group_id="both", zookeeper=zk_cluster.hosts, bootstrap_servers=zk_cluster.bootstrap) as ac:
        assert ac.committed(TopicPartition("shared", 2)) == 2


def test_a_broker_killed_and_restarted_while_a_producer_runs(zk_cluster: ZkCluster) -> None:
    from confluent_kafka import Producer as CProducer

    _start(zk_cluster, "bounce")
    bootstrap = ",".join(b.kafka_bootstrap for b in zk_cluster.brokers.values())
    delivered: list[tuple[int, int]] = []
    failed: list[Any] = []

    def report(err: Any, msg: Any) -> None:
        (failed if err else delivered).append(err if err else (msg.partition(), msg.offset()))

    p = CProducer({"bootstrap.servers": bootstrap, "linger.ms": 5, "message.timeout.ms": 60000})
    for i in range(60):
        p.produce("bounce", b"before-%d" % i, partition=i % 6, on_delivery=report)
    p.flush(30)
    victim = zk_cluster.brokers[3]
    victim.kill()
    for i in range(60):
        p.produce("bounce", b"during-%d" % i, partition=i % 6, on_delivery=report)
        p.poll(0)
    time.sleep(1)
    victim.start()
    assert p.flush(90) == 0
    assert not failed, failed[:3]
    assert len(delivered) == 120
    got = _confluent_consume(zk_cluster.brokers[1].kafka_bootstrap, "bounce", 120)
    assert sorted(v for _, v in got) == sorted([b"before-%d" % i for i in range(60)] + [b"during-%d" % i for i in range(60)])


def test_a_replicated_topic_created_through_the_kafka_api_survives_its_leader_killed(zk_cluster: ZkCluster) -> None:
    """CreateTopics with replication factor 3; Metadata lists the replicas and the ISR; with
    one partition's leader SIGKILLed, an acks=all producer goes on through the new leader and
    every acknowledged record is read back."""
    from confluent_kafka import Producer as CProducer
    from confluent_kafka.admin import AdminClient, NewTopic as CNewTopic

    zk_cluster.start(1, 2, 3)
    zk_cluster.wait_registered({1, 2, 3})
    bootstrap = ",".join(b.kafka_bootstrap for b in zk_cluster.brokers.values())
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([CNewTopic("rf3", num_partitions=2, replication_factor=3)])["rf3"]
    fut.result(30)
    deadline = time.monotonic() + 30
    while True:
        md = admin.list_topics("rf3", timeout=10).topics["rf3"]
        parts = md.partitions
        if (md.error is None and len(parts) == 2
                and all(len(p.isrs) == 3 and p.leader >= 0 for p in parts.values())):
            break
        assert time.monotonic() < deadline, {p.id: (p.leader, p.replicas, p.isrs) for p in parts.values()}
        time.sleep(0.2)
    assert all(sorted(p.replicas) == [1, 2, 3] for p in parts.values())

    delivered: list[bytes] = []
    failed: list[Any] = []

    def report(err: Any, msg: Any) -> None:
        if err:
            failed.append(err)
        else:
            delivered.append(msg.value())

    p = CProducer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                   "message.timeout.ms": 90000})
    for i in range(50):
        p.produce("rf3", b"before-%d" % i, partition=0, on_delivery=report)
    assert p.flush(30) == 0
    victim_id = parts[0].leader
    zk_cluster.brokers[victim_id].kill()
    for i in range(50):
        p.produce("rf3", b"after-%d" % i, partition=0, on_delivery=report)
        p.poll(0)
    assert p.flush(90) == 0
    assert not failed, failed[:3]
    assert len(delivered) == 100

    survivor = next(b for i, b in zk_cluster.brokers.items() if i != victim_id)
    deadline = time.monotonic() + 30
    while True:
        now = AdminClient({"bootstrap.servers": survivor.kafka_bootstrap}).list_topics("rf3", timeout=10)
        p0 = now.topics["rf3"].partitions[0]
        if p0.leader not in (-1, victim_id) and victim_id not in p0.isrs:
            break
        assert time.monotonic() < deadline, (p0.leader, p0.replicas, p0.isrs)
        time.sleep(0.2)
    assert sorted(p0.replicas) == [1, 2, 3]
    got = _confluent_consume(survivor.kafka_bootstrap, "rf3", 100)
    assert sorted(v for _, v in got) == sorted(delivered)
