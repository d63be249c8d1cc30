"""Producer load balancing in ZooKeeper cluster mode (Kafka 0.7): keyless records go only to
partitions on live brokers once the producer has seen a broker go; keyed records keep their
partition and wait for its broker; nothing is dropped silently."""

from __future__ import annotations

import pytest

from annal.client._partitioner import partition_for_key
from annal.client.admin import Admin
from annal.client.producer import Producer
from annal.client.structs import NewTopic
from harness.zookeeper import ZkCluster, wait_until

pytestmark = pytest.mark.timeout(120)


def test_unkeyed_records_go_to_live_brokers_and_keyed_ones_wait(zk_cluster: ZkCluster) -> None:
    zk_cluster.start(1, 2, 3)
    zk_cluster.wait_registered({1, 2, 3})
    with Admin(bootstrap_servers=zk_cluster.bootstrap) as admin:
        admin.create_topics([NewTopic("lb", 6)])
    placement = zk_cluster.placement("lb")
    on_2 = {p for p, b in placement.items() if b == 2}
    assert len(on_2) == 2

    producer = Producer(zookeeper=zk_cluster.hosts, linger_ms=1, batch_size=1024, delivery_timeout_ms=60000)
    try:
        # Before: keyless records spread over all six partitions (small batches move the
        # sticky partition often).
        before = [producer.send("lb", b"x" * 100) for _ in range(600)]
        producer.flush(30)
        assert {f.get(5).partition for f in before} == set(range(6))

        zk_cluster.brokers[2].kill()
        md = producer._metadata
        wait_until(lambda: not md.is_alive(2), timeout_s=20, message="producer sees broker 2 gone")

        # After the notification: no keyless record goes to broker 2's partitions.
        after = [producer.send("lb", b"y" * 100) for _ in range(600)]
        producer.flush(30)
        partitions = {f.get(5).partition for f in after}
        assert partitions and not partitions & on_2
        assert partitions == set(range(6)) - on_2

        # A keyed record whose partition is on broker 2 keeps its partition and waits.
        key = next(b"k%d" % i for i in range(1000) if partition_for_key(b"k%d" % i, 6) in on_2)
        waiting = producer.send("lb", b"keyed", key=key)
        with pytest.raises(Exception):
            waiting.get(1.0)  # not delivered while broker 2 is down
        assert not waiting.is_done()
        zk_cluster.brokers[2].start()
        zk_cluster.wait_registered({1, 2, 3})
        meta = waiting.get(30)
        assert meta.partition == partition_for_key(key, 6) and meta.offset >= 0

        # Broker 2 is back: keyless records use its partitions again.
        wait_until(lambda: md.is_alive(2), timeout_s=20)
        again = [producer.send("lb", b"z" * 100) for _ in range(600)]
        producer.flush(30)
        assert {f.get(5).partition for f in again} & on_2
    finally:
        producer.close()


def test_a_producer_started_while_a_broker_is_down_avoids_it(zk_cluster: ZkCluster) -> None:
    zk_cluster.start(1, 2)
    zk_cluster.wait_registered({1, 2})
    with Admin(bootstrap_servers=zk_cluster.bootstrap) as admin:
        admin.create_topics([NewTopic("late", 4)])
    on_2 = {p for p, b in zk_cluster.placement("late").items() if b == 2}
    zk_cluster.brokers[2].kill()
    zk_cluster.wait_registered({1}, timeout_s=20)
    with Producer(zookeeper=zk_cluster.hosts, linger_ms=1, batch_size=1024, delivery_timeout_ms=60000) as producer:
        futures = [producer.send("late", b"x" * 100) for _ in range(400)]
        producer.flush(30)
        assert {f.get(5).partition for f in futures} == {0, 1, 2, 3} - on_2
